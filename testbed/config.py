"""The experiment schema: nested typed dataclasses, defaults, checks, and loading.

Values come from three layers, later winning: the dataclass defaults, a YAML file, and CLI overrides
``key.sub=value``. Every problem is raised as a :class:`ConfigError` whose message names the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A user error in a config: the message is one line naming the key (or file) and the problem."""


@dataclass
class RunConfig:
    name: str | None = None  # run directory name; default: <config stem>-<timestamp>
    out_dir: str = "runs"  # parent directory of run directories
    seed: int = 0  # seeds everything: data, init, shuffling, generation, evaluation
    generations: int = 5  # recursive generations after generation 0 (models 0..N)
    keep_checkpoints: Literal["all", "last", "none"] = "all"  # gen_000 is always kept (it scores data)
    # A finished run directory whose generation 0 this run takes instead of training its own (its model,
    # tokenizer and training record): sweeps share one generation 0 among settings that differ only after
    # it. The two configs must agree on everything generation 0 depends on.
    gen0_from: str | None = None
    log_with: Literal["none", "tensorboard", "wandb"] = "none"  # trackers through accelerate: loss, lr, metrics
    # CPU runs: torch's thread count. null: torch's default (the core count), written into the run's
    # config.yaml, so that a resume uses the same count: sums split over other counts round differently.
    threads: int | None = None


@dataclass
class LanguageConfig:
    """The built-in reference language (see testbed/language.py)."""

    seed: int = 1234  # the language itself (its vocabulary and probabilities)
    nouns: int = 1200
    verbs: int = 100
    adjectives: int = 100
    adverbs: int = 50
    zipf_exponent: float = 1.1
    train_sentences: int = 12000
    valid_sentences: int = 600
    test_sentences: int = 1200
    sentences_per_line: int = 8


@dataclass
class DataConfig:
    source: Literal["builtin", "files", "hf"] = "builtin"
    path: str | None = None  # files: a directory holding train.txt, valid.txt, test.txt
    hf_name: str | None = None  # hf: dataset name, e.g. wikitext
    hf_config: str | None = None  # hf: dataset config, e.g. wikitext-2-raw-v1
    hf_text_column: str = "text"
    block_size: int = 64  # training/evaluation blocks (the paper: 64 tokens)
    max_train_blocks: int | None = None  # cap the human training set (quick runs); null = all
    max_eval_blocks: int | None = None  # cap the validation and test blocks; null = all
    # How lines become a token stream. clean: lines stripped, empty ones dropped, end-of-text after each,
    # no special tokens. shumailov2024 (the authors' code): every raw line tokenized on its own with the
    # tokenizer's own special tokens (OPT's BOS before each), empty lines and the newline kept, no EOS added.
    preprocessing: Literal["clean", "shumailov2024"] = "clean"
    language: LanguageConfig = field(default_factory=LanguageConfig)


@dataclass
class TokenizerConfig:
    # A hub name, a directory saved by save_pretrained, or a directory with vocab.json + merges.txt.
    # null: the model's own tokenizer if model.name_or_path is set, else a BPE trained on the human
    # training split.
    name_or_path: str | None = None
    vocab_size: int = 3072  # for a trained BPE


@dataclass
class ModelConfig:
    name_or_path: str | None = None  # hub name or local path; null: build `arch` from scratch
    arch: Literal["gpt2", "opt", "llama", "gpt_neox"] = "gpt2"  # gpt_neox: Pythia's
    layers: int = 2
    width: int = 128
    heads: int = 4
    context: int = 128  # maximum positions
    trust_remote_code: bool = False


@dataclass
class WatermarkConfig:
    """Kirchenbauer et al. (2023) green-list watermark, through transformers' WatermarkingConfig (same
    fields and defaults): generation adds `bias` to the logits of a `greenlist_ratio` share of the
    vocabulary, re-drawn from the previous `context_width` tokens and `hashing_key`."""

    enabled: bool = False
    greenlist_ratio: float = 0.25
    bias: float = 2.0
    hashing_key: int = 15485863
    seeding_scheme: Literal["lefthash", "selfhash"] = "lefthash"
    context_width: int = 1


@dataclass
class GenerationConfig:
    mode: Literal["prompted", "unconditional"] = "prompted"
    prompt_tokens: int = 32  # prompted: the first k tokens of each human training block
    max_new_tokens: int = 32
    min_new_tokens: int = 0  # = max_new_tokens: end-of-text is never chosen, every example has that length
    num_samples: int | None = None  # synthetic examples per generation; null = as many as human ones
    do_sample: bool = True  # false: greedy (num_beams 1) or beam search
    num_beams: int = 1
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 0.9  # truncation: the tail is never sampled, so collapse shows quickly
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0
    batch_size: int = 256
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)


@dataclass
class MixingConfig:
    strategy: Literal["replace", "fixed_fraction", "accumulate", "accumulate_subsample"] = "replace"
    human_fraction: float = 0.1  # fixed_fraction: share of human examples in the training set
    fixed_subset: bool = False  # fixed_fraction: the same human subset every generation
    # fixed_fraction: reuse: the human examples are drawn from generation 0's training blocks; fresh: each
    # generation gets human blocks no earlier generation saw, from the training split beyond
    # data.max_train_blocks (the "fresh data loop")
    human_pool: Literal["reuse", "fresh"] = "reuse"


@dataclass
class CurateConfig:
    """What reaches training (testbed/curate.py). Filters on each generation's synthetic set (the producer's
    curation) run before mixing; the detector screens the mixed pool, as a scraper would."""

    # none | watermark (transformers' WatermarkDetector; needs generation.watermark.enabled) | oracle (flags
    # drawn from the known provenance at detector_tpr / detector_fpr). Flagged examples are dropped, human
    # ones included.
    detector: Literal["none", "watermark", "oracle"] = "none"
    z_threshold: float = 4.0  # watermark: flag a text whose z-score exceeds this
    detector_tpr: float = 0.9  # oracle: chance a synthetic example is flagged
    detector_fpr: float = 0.01  # oracle: chance a human example is flagged
    # none | exact (normalised text) | minhash (near-duplicates, datasketch MinHash-LSH): within a generation
    # and, when earlier synthetic data stays in the pool (accumulate), against earlier generations
    dedup: Literal["none", "exact", "minhash"] = "none"
    minhash_threshold: float = 0.8  # Jaccard similarity above which two texts are duplicates
    minhash_shingle: int = 2  # words per shingle (short texts need short shingles)
    minhash_perm: int = 128
    # Perplexity filter under generation 0: texts beyond the human 99th percentile are dropped as gibberish,
    # then the share perplexity_keep with the highest (or, as an ablation, lowest) perplexity is kept. 1: off
    perplexity_keep: float = 1.0
    perplexity_order: Literal["highest", "lowest"] = "highest"
    verifier: Literal["none", "grammar"] = "none"  # grammar (built-in language): keep only grammatical texts
    # importance: resample the screened pool with weights (1 - c)^resample_bias, c the detector's confidence
    # that a text is synthetic (Drayson et al. 2025): upsampled by resample_upsample, at most
    # resample_max_repeats copies of one example
    resample: Literal["none", "importance"] = "none"
    resample_bias: float = 10.0
    resample_upsample: float = 1.5
    resample_max_repeats: int = 3


@dataclass
class LoraConfig:
    """Low-rank adapters through peft: each generation trains a fresh adapter on the weights train.init names,
    then merges it into them, so every checkpoint is a plain model (loads with from_pretrained)."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0  # the update is scaled by alpha / rank
    dropout: float = 0.05
    # Module names to adapt; null: peft's default for the architecture (llama, opt: q_proj, v_proj;
    # gpt2: c_attn; gpt_neox: query_key_value)
    target_modules: list[str] | None = None


@dataclass
class TrainConfig:
    epochs: int = 2
    gen0_epochs: int | None = 6  # generation 0 (e.g. from scratch) may need more; null = epochs
    lr: float = 2e-3
    min_lr: float = 0.0  # cosine decays to this
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    # step: the schedule advances every optimizer step; epoch: it is held within an epoch and advances per
    # epoch (torch's CosineAnnealingLR(T_max=epochs) stepped once an epoch, as the paper's code does)
    schedule_interval: Literal["step", "epoch"] = "step"
    warmup_steps: int = 0
    # Examples of one step over all processes (accelerate launch splits it evenly); the effective batch is
    # batch_size x grad_accum, whatever the process count.
    batch_size: int = 16
    grad_accum: int = 1
    weight_decay: float = 0.0
    weight_decay_all: bool = False  # false: decay weight matrices only; true: biases and norms too (torch's default)
    max_grad_norm: float = 1.0  # 0: no clipping
    # Where generation g >= 1 starts: previous: model g-1 (drift compounds in the weights); base: the
    # pretrained (or freshly initialised) base model; gen0: the generation-0 model
    init: Literal["previous", "base", "gen0"] = "previous"
    # Packing: put an end-of-text between consecutive synthetic examples that do not end with one
    # (unrelated continuations are otherwise glued together)
    eos_between_examples: bool = False
    select_best: bool = True  # keep the checkpoint best on human validation (evaluated every epoch)
    eval_every: int = 0  # also evaluate every N optimizer steps (0: only at epoch ends)
    # Weights are always fp32 master weights; bf16/fp16 autocast the forward passes of training, evaluation,
    # generation and scoring alike (fp16 adds a gradient scaler). On a CPU measure before choosing bf16.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the training model (pays off on long runs; compiling takes ~1 min)
    # Recompute activations in the backward pass: less memory for about a third more compute (large models)
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class EvalConfig:
    num_samples: int = 128  # evaluation samples for the diversity metrics
    prompt_tokens: int = 16  # prompted mode: prefix of each test block used as prompt
    max_new_tokens: int = 32
    batch_size: int = 64
    tail_rank: int = 200  # tail = words ranked below this in human training frequency
    tail_tokens: int = 256  # tail_token_mass: tokens outside the human training text's most frequent this many
    kl_alpha: float = 0.5  # unigram_kl: add-alpha smoothing of both unigram distributions


@dataclass
class SlurmConfig:
    """`testbed sweep --launcher slurm`: one job array, one array task per run (flags override these)."""

    partition: str | None = None  # null: the cluster's default partition
    time_min: int = 240  # time limit per run; a run that reaches it is requeued and resumes
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: float | None = None  # null: the partition's default
    array_parallelism: int = 64  # runs at once, at most
    max_requeues: int = 3  # time-limit requeues per run (pre-emptions requeue without a limit)


@dataclass
class SweepConfig:
    """Used by `testbed sweep` only (`testbed run` ignores it): runs = settings x grid."""

    # Named alternatives, each a mapping of dotted keys to values, e.g. {mixing.strategy: replace}.
    settings: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted key -> values: the cross product
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Checks: ranges and cross-field rules. Types are checked while merging.


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {problem}")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,-]*$")


def check(cfg: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range or inconsistent."""
    r, d, t, m, g, x, e = cfg.run, cfg.data, cfg.train, cfg.model, cfg.generation, cfg.mixing, cfg.eval
    _require(r.generations >= 1, "run.generations", f"must be at least 1, got {r.generations}")
    _require(r.threads is None or r.threads >= 1, "run.threads", f"must be at least 1 or null, got {r.threads}")
    _require(
        r.name is None or (bool(_NAME.match(r.name)) and ".." not in r.name),
        "run.name",
        f"{r.name!r} must be a plain directory name (letters, digits, . _ - = ,), not a path",
    )
    _require(d.block_size >= 2, "data.block_size", f"must be at least 2, got {d.block_size}")
    for key in ("max_train_blocks", "max_eval_blocks"):
        v = getattr(d, key)
        _require(v is None or v >= 1, f"data.{key}", f"must be at least 1 or null, got {v}")
    if d.source == "files":
        _require(d.path is not None, "data.path", "is required when data.source is 'files'")
    if d.source == "hf":
        _require(d.hf_name is not None, "data.hf_name", "is required when data.source is 'hf'")
    lang = d.language
    for key in ("nouns", "verbs", "adjectives", "adverbs", "train_sentences", "valid_sentences",
                "test_sentences", "sentences_per_line"):
        _require(getattr(lang, key) >= 1, f"data.language.{key}", "must be at least 1")
    _require(lang.zipf_exponent > 0, "data.language.zipf_exponent", "must be positive")
    _require(cfg.tokenizer.vocab_size >= 300, "tokenizer.vocab_size",
             f"must be at least 300 (256 bytes + specials), got {cfg.tokenizer.vocab_size}")

    if m.name_or_path is None:
        for key in ("layers", "width", "heads", "context"):
            _require(getattr(m, key) >= 1, f"model.{key}", "must be at least 1")
        _require(m.width % m.heads == 0, "model.width", f"{m.width} is not divisible by model.heads={m.heads}")
        check_lengths(cfg, m.context, "model.context")

    _require(g.prompt_tokens >= 1, "generation.prompt_tokens", "must be at least 1")
    _require(g.prompt_tokens <= d.block_size, "generation.prompt_tokens",
             f"{g.prompt_tokens} is longer than a block (data.block_size={d.block_size})")
    _require(g.max_new_tokens >= 1, "generation.max_new_tokens", "must be at least 1")
    _require(0 <= g.min_new_tokens <= g.max_new_tokens, "generation.min_new_tokens",
             f"must be in [0, generation.max_new_tokens={g.max_new_tokens}], got {g.min_new_tokens}")
    _require(g.num_samples is None or g.num_samples >= 1, "generation.num_samples", "must be >= 1 or null")
    _require(g.num_beams >= 1, "generation.num_beams", f"must be at least 1, got {g.num_beams}")
    _require(g.temperature > 0, "generation.temperature", f"must be positive, got {g.temperature}")
    _require(g.top_k >= 0, "generation.top_k", "must be >= 0 (0 turns it off)")
    _require(0 < g.top_p <= 1, "generation.top_p", f"must be in (0, 1], got {g.top_p}")
    _require(0 <= g.min_p < 1, "generation.min_p", f"must be in [0, 1), got {g.min_p}")
    _require(g.repetition_penalty > 0, "generation.repetition_penalty", "must be positive")
    _require(g.batch_size >= 1, "generation.batch_size", "must be at least 1")

    _require(0 <= x.human_fraction <= 1, "mixing.human_fraction",
             f"must be a fraction in [0, 1], got {x.human_fraction}")
    _require(x.human_pool == "reuse" or x.strategy == "fixed_fraction", "mixing.human_pool",
             f"fresh applies to mixing.strategy=fixed_fraction, not {x.strategy}")

    w, c = g.watermark, cfg.curate
    _require(0 < w.greenlist_ratio < 1, "generation.watermark.greenlist_ratio", "must be in (0, 1)")
    _require(w.context_width >= 1, "generation.watermark.context_width", "must be at least 1")
    _require(c.detector != "watermark" or w.enabled, "curate.detector",
             "watermark needs generation.watermark.enabled=true (nothing to detect otherwise)")
    for key in ("detector_tpr", "detector_fpr"):
        _require(0 <= getattr(c, key) <= 1, f"curate.{key}", f"must be in [0, 1], got {getattr(c, key)}")
    _require(0 < c.minhash_threshold <= 1, "curate.minhash_threshold", "must be in (0, 1]")
    _require(c.minhash_shingle >= 1, "curate.minhash_shingle", "must be at least 1")
    _require(c.minhash_perm >= 16, "curate.minhash_perm", "must be at least 16")
    _require(0 < c.perplexity_keep <= 1, "curate.perplexity_keep", f"must be in (0, 1], got {c.perplexity_keep}")
    _require(c.verifier == "none" or d.source == "builtin", "curate.verifier",
             "grammar needs the built-in language (data.source=builtin)")
    _require(c.resample == "none" or c.detector != "none", "curate.resample",
             "importance resampling weighs by the detector's scores: set curate.detector")
    _require(c.resample_upsample > 0, "curate.resample_upsample", "must be positive")
    _require(c.resample_max_repeats >= 1, "curate.resample_max_repeats", "must be at least 1")

    _require(t.epochs >= 1, "train.epochs", f"must be at least 1, got {t.epochs}")
    _require(t.gen0_epochs is None or t.gen0_epochs >= 1, "train.gen0_epochs", "must be >= 1 or null")
    _require(t.lr > 0, "train.lr", f"must be positive, got {t.lr}")
    _require(0 <= t.min_lr <= t.lr, "train.min_lr", f"must be in [0, train.lr], got {t.min_lr}")
    _require(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    _require(t.batch_size >= 1, "train.batch_size", f"must be at least 1, got {t.batch_size}")
    _require(t.grad_accum >= 1, "train.grad_accum", "must be at least 1")
    _require(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _require(t.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0")
    _require(t.eval_every >= 0, "train.eval_every", "must be >= 0")
    lo = t.lora
    _require(lo.rank >= 1, "train.lora.rank", f"must be at least 1, got {lo.rank}")
    _require(lo.alpha > 0, "train.lora.alpha", f"must be positive, got {lo.alpha}")
    _require(0 <= lo.dropout < 1, "train.lora.dropout", f"must be in [0, 1), got {lo.dropout}")
    _require(lo.target_modules is None or (len(lo.target_modules) > 0 and all(
        isinstance(n, str) and n for n in lo.target_modules)), "train.lora.target_modules",
        "must be a non-empty list of module names, or null (peft's default for the architecture)")

    _require(e.num_samples >= 2, "eval.num_samples", "must be at least 2 (self-BLEU needs references)")
    _require(1 <= e.prompt_tokens <= d.block_size, "eval.prompt_tokens",
             f"must be in [1, data.block_size={d.block_size}]")
    _require(e.max_new_tokens >= 1, "eval.max_new_tokens", "must be at least 1")
    _require(e.batch_size >= 1, "eval.batch_size", "must be at least 1")
    _require(e.tail_rank >= 1, "eval.tail_rank", "must be at least 1")
    _require(e.tail_tokens >= 1, "eval.tail_tokens", "must be at least 1")
    _require(e.kl_alpha > 0, "eval.kl_alpha", f"must be positive, got {e.kl_alpha}")

    sl = cfg.sweep.slurm
    for key in ("time_min", "cpus_per_run", "array_parallelism"):
        _require(getattr(sl, key) >= 1, f"sweep.slurm.{key}", f"must be at least 1, got {getattr(sl, key)}")
    for key in ("gpus_per_run", "max_requeues"):
        _require(getattr(sl, key) >= 0, f"sweep.slurm.{key}", f"must be >= 0, got {getattr(sl, key)}")
    _require(sl.mem_gb is None or sl.mem_gb > 0, "sweep.slurm.mem_gb", "must be positive or null")


def check_lengths(cfg: Config, context: int, source: str) -> None:
    """Every sequence the run feeds the model fits its `context` positions: training and evaluation
    blocks, prompt + continuation of generation and of evaluation samples (a start token + continuation
    when unconditional). `source` says where the context comes from, for the message."""
    d, g, e = cfg.data, cfg.generation, cfg.eval
    unconditional = g.mode == "unconditional"
    start = "a start token" if unconditional else "prompt_tokens"
    lengths = [
        ("data.block_size", d.block_size, ""),
        ("generation.max_new_tokens", (1 if unconditional else g.prompt_tokens) + g.max_new_tokens,
         f"{start} + max_new_tokens = "),
        ("eval.max_new_tokens", (1 if unconditional else e.prompt_tokens) + e.max_new_tokens,
         f"{start} + max_new_tokens = "),
    ]
    for key, length, what in lengths:
        _require(length <= context, key, f"{what}{length} exceeds the model's context ({source}={context})")


# Values a key no longer takes, with the one to use instead. YAML 1.1 reads a bare `no` as false.
_RENAMED = {"train.precision": {"no": "fp32", False: "fp32"}}


# ---------------------------------------------------------------------------------------------
# Merging: type-directed, so errors name the key and what was expected.


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + " | ".join(str(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, from_cli: bool) -> Any:
    """Check (YAML) or parse (CLI string) `value` as type `tp`; raise ConfigError naming `key`."""
    base, optional = _unwrap_optional(tp)
    if from_cli and isinstance(value, str) and value.lower() in ("null", "none", "~") and optional:
        return None
    if value is None:
        _require(optional, key, f"expected {_describe(base)}, got null")
        return None
    if from_cli and isinstance(value, str) and base is not str:
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        renamed = _RENAMED.get(key, {})
        if isinstance(value, (str, bool)) and value in renamed:
            shown = "no (YAML reads it as false)" if value is False else repr(value)
            raise ConfigError(f"config key '{key}': {shown} is no longer a value; use '{renamed[value]}' "
                              f"(one of {' | '.join(map(str, choices))})")
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"config key '{key}': expected {_describe(base)}, got {value!r}{extra}")
        return value
    if base is bool:
        _require(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if base is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key,
                 f"expected an integer, got {value!r}")
        return value
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-5 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _require(ok, key, f"expected a number, got {value!r}")
        return float(value)
    if typing.get_origin(base) in (list, dict):  # sweep specs: checked when the sweep expands them
        container = typing.get_origin(base)
        _require(isinstance(value, container), key, f"expected a {container.__name__}, got {value!r}")
        return value
    if base is str:
        if from_cli or isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        _require(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")  # a schema bug, not a user error


def _merge(obj: Any, values: dict[str, Any], prefix: str, from_cli: bool) -> None:
    hints = _hints(type(obj))
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            hint = difflib.get_close_matches(name, list(hints), n=1)
            extra = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"unknown config key '{key}'{extra}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _require(isinstance(value, dict), key, f"expected a mapping of sub-keys, got {value!r}")
            _merge(current, value, key + ".", from_cli)
        else:
            setattr(obj, name, _coerce(value, hints[name], key, from_cli))


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """Turn ['train.lr=1e-3', ...] into {'train.lr': '1e-3', ...}."""
    out: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        out[key.strip()] = value
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}': '{p}' is not a section")
        node[leaf] = value
    return nested


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file with yaml.safe_load; a missing, unparsable or non-mapping file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a checked Config from defaults < YAML file < CLI overrides."""
    cfg = Config()
    file_values = read_yaml(path) if path is not None else {}
    _merge(cfg, file_values, "", from_cli=False)
    flat = parse_overrides(overrides or [])
    _merge(cfg, _nest(flat), "", from_cli=True)
    # Naming a directory of text files is unambiguous: it means source=files, unless a source is named
    # on the command line too, or the file names both.
    data_file = file_values.get("data") or {}
    if cfg.data.path is not None and "data.source" not in flat and ("data.path" in flat or "source" not in data_file):
        cfg.data.source = "files"
    check(cfg)
    return cfg


def from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from a resolved dict (e.g. a run directory's config.yaml), with checks."""
    cfg = Config()
    _merge(cfg, values, "", from_cli=False)
    check(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Keys generation 0's training never reads: runs that differ only in these can share one generation 0.
AFTER_GEN0 = ("run.name", "run.out_dir", "run.generations", "run.keep_checkpoints", "run.gen0_from", "run.log_with",
              "generation.", "mixing.", "curate.", "eval.", "sweep.", "train.init", "train.eos_between_examples")


def gen0_values(cfg: Config) -> dict[str, Any]:
    """The values (dotted keys) that decide what generation 0 learns: two runs that agree on them train the
    same generation 0, so one of them can take it from the other (run.gen0_from)."""
    values = {k: v for k, v in flatten(cfg.to_dict()).items() if not k.startswith(AFTER_GEN0)}
    if cfg.train.gen0_epochs is not None:
        values.pop("train.epochs")  # generation 0 trains for gen0_epochs
    return values


def gen0_diff(a: Config, b: Config) -> list[str]:
    """Keys whose values differ between two configs and change what generation 0 learns."""
    va, vb = gen0_values(a), gen0_values(b)
    return sorted(k for k in va.keys() | vb.keys() if va.get(k) != vb.get(k))


def diff(a: Config, b: Config) -> list[str]:
    """Keys (dotted) whose values differ between two configs."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa if fa[k] != fb.get(k))
