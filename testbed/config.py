"""The experiment schema: nested typed dataclasses, defaults, checks, and loading.

Values come from three layers, later winning: the dataclass defaults, a YAML file, and CLI overrides
``key.sub=value``. A mapping key (eval.corpora, sweep.grid, sweep.slurm.additional) takes the entries a later
layer names beside those of the earlier ones. Every problem is raised as a :class:`ConfigError` whose message
names the key.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped: keys and values in messages come from
    the user's text, and a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(ValueError):
    """A user error in a config: the message is one line naming the key (or file) and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


@dataclass
class RunConfig:
    name: str | None = None  # run directory name; default: <config stem>-<timestamp>
    out_dir: str = "runs"  # parent directory of run directories
    seed: int = 0  # seeds everything: data, init, shuffling, generation, evaluation
    generations: int = 5  # recursive generations after generation 0 (models 0..N)
    keep_checkpoints: Literal["all", "last", "none"] = "all"  # gen_000 is always kept (it scores data)
    # A run directory whose generations 0..prefix_until this run takes instead of computing them (their
    # folders, synthetic sets and metrics rows; then it continues from prefix_until + 1): sweeps share each
    # common prefix among runs that differ only after it. The two configs must agree on everything those
    # generations depend on (sharing.prefix_values).
    prefix_from: str | None = None
    # the last generation taken from prefix_from (0: generation 0 alone; -1: the pretrained base alone, see pretrain)
    prefix_until: int = 0
    log_with: Literal["none", "tensorboard", "wandb"] = "none"  # trackers through accelerate: loss, lr, metrics
    # CPU runs: torch's thread count. null: torch's default (the core count), written into the run's
    # config.yaml, so that a resume uses the same count: sums split over other counts round differently.
    threads: int | None = None
    # CPU runs: torch's AVX2 kernels and MKL's compatible code path whatever else the CPU offers
    # (ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=COMPATIBLE), for the same numbers on other x86 CPUs with AVX2.
    portable_numerics: bool = False


@dataclass
class LanguageConfig:
    """The built-in reference language (see testbed/language.py)."""

    seed: int = 1234  # the language itself (its vocabulary and probabilities)
    nouns: int = 1200  # words in the noun class (the largest: where the rare tail lives)
    verbs: int = 100  # words in the verb class; each verb has its own ranking of object nouns
    adjectives: int = 100  # words in the adjective class
    adverbs: int = 50  # words in the adverb class
    zipf_exponent: float = 1.1  # every class is Zipf-distributed with this exponent: larger, a thinner tail
    train_sentences: int = 12000  # sentences drawn for the human training split (fixed by run.seed)
    valid_sentences: int = 600  # sentences of the validation split (checkpoint selection)
    test_sentences: int = 1200  # sentences of the test split (ppl_human and the exact KL)
    sentences_per_line: int = 8  # sentences joined into one line of the corpus
    domains: int = 1  # topics sharing grammar and vocabulary, each its own Zipf ranking of the nouns
    domain: int = 0  # the domain of the human text the run fine-tunes on (0..domains-1)


@dataclass
class DataConfig:
    # builtin: the reference language with known probabilities (testbed/language.py); files: a directory of
    # train/valid/test.txt (data.path); hf: a Hugging Face dataset (data.hf_name, needs the hub or its cache)
    source: Literal["builtin", "files", "hf"] = "builtin"
    # files: a directory holding train.txt, valid.txt, test.txt. Relative paths: in a config file relative to
    # the file's directory, on the command line to the current directory (the same for the keys below)
    path: str | None = None
    hf_name: str | None = None  # hf: dataset name, e.g. wikitext
    hf_config: str | None = None  # hf: dataset config, e.g. wikitext-2-raw-v1
    hf_text_column: str = "text"  # hf: the dataset column that holds the text
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
    # training split. A local path starts with / . ~ or exists; relative ones as for data.path.
    name_or_path: str | None = None
    vocab_size: int = 3072  # for a trained BPE


@dataclass
class ModelConfig:
    # hub name or local path (one that starts with / . ~ or exists; relative as for data.path); null: build
    # `arch` from scratch
    name_or_path: str | None = None
    arch: Literal["gpt2", "opt", "llama", "gpt_neox"] = "gpt2"  # gpt_neox: Pythia's
    layers: int = 2  # from scratch (name_or_path null): transformer blocks
    width: int = 128  # from scratch: hidden size (the MLP is 4x as wide)
    heads: int = 4  # from scratch: attention heads (width must divide by it)
    context: int = 128  # maximum positions
    # Run code that a hub checkpoint ships (custom model classes): only for checkpoints you trust
    trust_remote_code: bool = False


@dataclass
class WatermarkConfig:
    """Kirchenbauer et al. (2023) green-list watermark, through transformers' WatermarkingConfig (same
    fields and defaults): generation adds `bias` to the logits of a `greenlist_ratio` share of the
    vocabulary, re-drawn from the previous `context_width` tokens and `hashing_key`."""

    enabled: bool = False  # watermark the synthetic data of every generation (curate.detector=watermark reads it)
    greenlist_ratio: float = 0.25  # share of the vocabulary on the green list at each step
    bias: float = 2.0  # added to the green tokens' logits: larger, an easier detection and a larger distortion
    hashing_key: int = 15485863  # the secret key of the green lists (detector and generator must share it)
    seeding_scheme: Literal["lefthash", "selfhash"] = "lefthash"  # how the previous tokens seed the green list
    context_width: int = 1  # previous tokens that seed each step's green list


@dataclass
class GenerationConfig:
    # prompted: continue the first prompt_tokens of each human training block (the paper); unconditional:
    # sample from the start token alone
    mode: Literal["prompted", "unconditional"] = "prompted"
    prompt_tokens: int = 32  # prompted: the first k tokens of each human training block
    max_new_tokens: int = 32  # tokens generated after the prompt (an example ends earlier at end-of-text)
    min_new_tokens: int = 0  # = max_new_tokens: end-of-text is never chosen, every example has that length
    num_samples: int | None = None  # synthetic examples per generation; null = as many as human ones
    do_sample: bool = True  # false: greedy (num_beams 1) or beam search
    num_beams: int = 1  # > 1: beam search (the paper uses 5); its samples describe the search
    temperature: float = 1.0  # divides the logits before sampling: below 1 sharper, above 1 flatter
    top_k: int = 0  # 0: off
    top_p: float = 0.9  # truncation: the tail is never sampled, so collapse shows quickly
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the text (1: off)
    # Sequences per generate call; a batch that does not fit in memory is redone in smaller pieces with the
    # same random draws, so results do not depend on it fitting
    batch_size: int = 256
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)


@dataclass
class MixingConfig:
    # What generation g >= 1 trains on. replace: only the synthetic data of model g-1; fixed_fraction: that
    # data with human_fraction of human examples; accumulate: the human data and every synthetic set so far;
    # accumulate_subsample: that accumulated pool subsampled to the size of the human set
    strategy: Literal["replace", "fixed_fraction", "accumulate", "accumulate_subsample"] = "replace"
    human_fraction: float = 0.1  # fixed_fraction: share of human examples in the training set
    fixed_subset: bool = False  # fixed_fraction: the same human subset every generation
    # fixed_fraction: the synthetic part is the continuations of the blocks the human part does not take, so
    # each training block appears once, as itself or as its model's continuation. With fixed_subset: true this
    # is the Shumailov et al. code's draw (it reseeds every call: the same tenth each cycle). Needs every
    # human block prompted once (prompted mode, generation.num_samples null) and no curation filter.
    complementary: bool = False
    # fixed_fraction: reuse: the human examples are drawn from generation 0's training blocks; fresh: each
    # generation gets human blocks no earlier generation saw, from the training split beyond
    # data.max_train_blocks (the "fresh data loop"); pretrain: drawn from the pretraining corpus's blocks (the
    # base's data, e.g. every domain of the built-in language: healing with what the base knew)
    human_pool: Literal["reuse", "fresh", "pretrain"] = "reuse"
    # Mixing that changes by generation: entries {from_generation: k, <keys above>}, in increasing k
    # (1..run.generations); each sets the keys it names from generation k on, the others keep their values.
    # The keys above hold from generation 1 until the first entry.
    schedule: list[dict[str, Any]] = field(default_factory=list)

    def at(self, generation: int) -> MixingConfig:
        """The mixing settings of `generation` (>= 1): these keys with every schedule entry up to it applied."""
        values = {k: v for entry in self.schedule if entry["from_generation"] <= generation
                  for k, v in entry.items() if k != "from_generation"}
        return dataclasses.replace(self, schedule=[], **values)


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
    minhash_perm: int = 128  # minhash: permutations per signature (more: a sharper threshold, slower)
    # Perplexity filter under generation 0: texts beyond the human 99th percentile are dropped as gibberish,
    # then the share perplexity_keep with the highest (or, as an ablation, lowest) perplexity is kept. 1: off
    perplexity_keep: float = 1.0
    perplexity_order: Literal["highest", "lowest"] = "highest"  # which end of the perplexity ranking is kept
    verifier: Literal["none", "grammar"] = "none"  # grammar (built-in language): keep only grammatical texts
    # importance: resample the screened pool with weights (1 - c)^resample_bias, c the detector's confidence
    # that a text is synthetic (Drayson et al. 2025): upsampled by resample_upsample, at most
    # resample_max_repeats copies of one example
    resample: Literal["none", "importance"] = "none"
    resample_bias: float = 10.0  # importance: the exponent of (1 - c); larger, synthetic-looking texts rarer
    resample_upsample: float = 1.5  # importance: the resampled pool's size over the screened pool's
    resample_max_repeats: int = 3  # importance: copies of one example at most


@dataclass
class LoraConfig:
    """Low-rank adapters through peft: each generation trains a fresh adapter on the weights train.init names,
    then merges it into them, so every checkpoint is a plain model (loads with from_pretrained)."""

    enabled: bool = False  # train LoRA adapters instead of every weight (large models on one GPU)
    rank: int = 16  # the adapters' rank: larger, more capacity and memory
    alpha: float = 32.0  # the update is scaled by alpha / rank
    dropout: float = 0.05  # dropout on the adapters' input
    # Module names to adapt; null: peft's default for the architecture (llama, opt: q_proj, v_proj;
    # gpt2: c_attn; gpt_neox: query_key_value)
    target_modules: list[str] | None = None


@dataclass
class TrainConfig:
    epochs: int = 2  # passes over each generation's training set (the paper: 5)
    gen0_epochs: int | None = 6  # generation 0 (e.g. from scratch) may need more; null = epochs
    lr: float = 2e-3  # AdamW's peak learning rate (after warmup), for every generation
    min_lr: float = 0.0  # cosine decays to this
    schedule: Literal["cosine", "constant", "linear"] = "cosine"  # the learning rate's decay within a generation
    # step: the schedule advances every optimizer step; epoch: it is held within an epoch and advances per
    # epoch (torch's CosineAnnealingLR(T_max=epochs) stepped once an epoch, as the paper's code does)
    schedule_interval: Literal["step", "epoch"] = "step"
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many optimizer steps
    # Examples of one step over all processes (accelerate launch splits it evenly); the effective batch is
    # batch_size x grad_accum, whatever the process count.
    batch_size: int = 16
    grad_accum: int = 1  # micro-batches per optimizer step (less memory for the same effective batch)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
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
class EvalDecodingConfig:
    """How evaluation samples are drawn, key by key; null: generation's value of the same key (by default
    evaluation decodes as generation does). Evaluation samples are never watermarked. Under beam search
    (generation.num_beams > 1) the samples' diversity describes the search, not the model's distribution:
    set do_sample=true, num_beams=1 here to measure the model."""

    do_sample: bool | None = None  # null: generation.do_sample
    num_beams: int | None = None  # null: generation.num_beams
    temperature: float | None = None  # null: generation.temperature
    top_k: int | None = None  # null: generation.top_k
    top_p: float | None = None  # null: generation.top_p
    min_p: float | None = None  # null: generation.min_p
    repetition_penalty: float | None = None  # null: generation.repetition_penalty


@dataclass
class EvalConfig:
    num_samples: int = 128  # evaluation samples for the diversity metrics
    prompt_tokens: int = 16  # prompted mode: prefix of each test block used as prompt
    max_new_tokens: int = 32  # tokens per evaluation sample
    batch_size: int = 64  # sequences per forward or generate call when evaluating (memory, not results)
    tail_rank: int = 200  # tail = words ranked below this in human training frequency
    tail_tokens: int = 256  # tail_token_mass: tokens outside the human training text's most frequent this many
    kl_alpha: float = 0.5  # unigram_kl: add-alpha smoothing of both unigram distributions
    decoding: EvalDecodingConfig = field(default_factory=EvalDecodingConfig)
    # Extra evaluation sets, name -> where its text comes from: builtin:D (domain D of the built-in language),
    # builtin:all (the mixture of its domains), hf:NAME or hf:NAME/CONFIG (a hub dataset's test split), or a
    # directory holding test.txt. Each adds ppl_NAME with its head/tail split (ppl_NAME_head, ppl_NAME_tail: by
    # the token's frequency in that corpus's own test text) and, on the built-in language, kl_per_word_NAME
    # to every row; generation 0's row also scores the base model on it (ppl_NAME_zero_shot)
    corpora: dict[str, str] = field(default_factory=dict)


@dataclass
class PretrainConfig:
    """A base model trained from scratch before generation 0, as a hub model was pretrained, so that generation
    0 fine-tunes a model that knows more than its fine-tuning data. Trained once, saved in the run's base/
    folder, and shared by every run of a sweep with the same pretraining (and model, tokenizer) values."""

    # none: generation 0 trains a random init (model.name_or_path null) or the named checkpoint, which is then
    # the base; builtin: the built-in language's mixture of all data.language.domains; files: pretrain.path
    source: Literal["none", "builtin", "files"] = "none"
    path: str | None = None  # files: a directory holding train.txt, the pretraining text
    sentences: int = 24000  # builtin: sentences drawn from the mixture of the domains
    max_blocks: int | None = None  # cap the pretraining blocks (data.block_size tokens each); null = all
    epochs: int = 2  # passes over the pretraining blocks
    lr: float = 2e-3  # peak learning rate of pretraining (the rest of the optimizer is train's)
    # The base's own seed (its corpus draw, initialisation and data order), apart from run.seed: runs of
    # every seed fine-tune one base, as they would one hub checkpoint
    seed: int = 0


@dataclass
class SlurmConfig:
    """`testbed sweep --launcher slurm`: one array task per run, or per part of a run (flags override these)."""

    partition: str | None = None  # null: the cluster's default partition
    time_min: int = 240  # time limit per run; a run that reaches it is requeued and resumes
    gpus_per_run: int = 0  # sbatch --gpus-per-node (one node a run); 0: CPU runs
    cpus_per_run: int = 1  # sbatch --cpus-per-task (a run's OMP_NUM_THREADS)
    mem_gb: float | None = None  # null: the partition's default
    array_parallelism: int = 64  # runs at once, at most
    max_requeues: int = 3  # time-limit requeues per run (pre-emptions requeue without a limit)
    account: str | None = None  # sbatch --account: the account charged (null: the user's default)
    qos: str | None = None  # sbatch --qos: the quality of service (null: the account's default)
    constraint: str | None = None  # sbatch --constraint: node features, e.g. h100 or "a100|h100"
    # Any other sbatch options, name: value (e.g. {reservation: R, exclude: node7, hold: true}); passed as
    # submitit's slurm_additional_parameters, they override the keys above where they name the same option.
    additional: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepConfig:
    """Used by `testbed sweep` only (`testbed run` ignores it): runs = settings x grid."""

    # Alternatives, each a mapping of dotted keys to values, e.g. {mixing.strategy: replace}, and an optional
    # `name`: the setting's label in reports (default: its values that vary, short).
    settings: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted key -> values: the cross product
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
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


def is_plain_name(name: str) -> bool:
    """A name usable as a directory name: letters, digits, . _ = , - (not starting with a symbol, no '..')."""
    return bool(_NAME.match(name)) and ".." not in name


def check(cfg: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range or inconsistent."""
    r, d, t, m, g, x, e = cfg.run, cfg.data, cfg.train, cfg.model, cfg.generation, cfg.mixing, cfg.eval
    for key, seed in (("run.seed", r.seed), ("data.language.seed", d.language.seed)):  # numpy's seeds: >= 0
        _require(0 <= seed < 2**32, key, f"must be in 0..2**32-1, got {seed}")
    _require(r.generations >= 1, "run.generations", f"must be at least 1, got {r.generations}")
    lowest = -1 if cfg.pretrain.source != "none" else 0  # -1: the pretrained base
    _require(lowest <= r.prefix_until <= r.generations, "run.prefix_until",
             f"must be in {lowest}..run.generations={r.generations}, got {r.prefix_until}")
    _require(r.prefix_until == 0 or r.prefix_from is not None, "run.prefix_until",
             "needs run.prefix_from (the run whose generations this run takes)")
    _require(r.threads is None or r.threads >= 1, "run.threads", f"must be at least 1 or null, got {r.threads}")
    _require(
        r.name is None or is_plain_name(r.name),
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
                "test_sentences", "sentences_per_line", "domains"):
        _require(getattr(lang, key) >= 1, f"data.language.{key}", f"must be at least 1, got {getattr(lang, key)}")
    _require(0 <= lang.domain < lang.domains, "data.language.domain",
             f"must be in 0..{lang.domains - 1} (data.language.domains={lang.domains}), got {lang.domain}")
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
    _check_decoding(g, "generation.")
    _check_decoding(e.decoding, "eval.decoding.")
    _require(g.batch_size >= 1, "generation.batch_size", "must be at least 1")

    _check_mixing(x, "mixing.", "")
    check_schedule(x, r.generations)
    if cfg.pretrain.source == "none":
        _require(all(x.at(gen).human_pool != "pretrain" for gen in range(1, r.generations + 1)), "mixing.human_pool",
                 "pretrain draws from the pretraining corpus: set pretrain.source")
    if x.complementary:
        _require(x.strategy == "fixed_fraction" and x.human_pool == "reuse", "mixing.complementary",
                 "applies to mixing.strategy=fixed_fraction with mixing.human_pool=reuse")
        _require(g.mode == "prompted" and g.num_samples is None, "mixing.complementary",
                 "needs one continuation per human block: generation.mode=prompted, generation.num_samples=null")
        c = cfg.curate
        _require(c.dedup == "none" and c.verifier == "none" and c.perplexity_keep == 1, "mixing.complementary",
                 "needs every continuation: no curate.dedup, curate.verifier or curate.perplexity_keep filter")

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
    for name, source in e.corpora.items():
        _check_corpus(name, source, d)
    _check_pretrain(cfg)

    for key, values in cfg.sweep.grid.items():
        _require(len(values) > 0, f"sweep.grid.{key}", "has no values")
    sl = cfg.sweep.slurm
    for key in ("time_min", "cpus_per_run", "array_parallelism"):
        _require(getattr(sl, key) >= 1, f"sweep.slurm.{key}", f"must be at least 1, got {getattr(sl, key)}")
    for key in ("gpus_per_run", "max_requeues"):
        _require(getattr(sl, key) >= 0, f"sweep.slurm.{key}", f"must be >= 0, got {getattr(sl, key)}")
    _require(sl.mem_gb is None or sl.mem_gb > 0, "sweep.slurm.mem_gb", "must be positive or null")


def _check_corpus(name: str, source: str, d: DataConfig) -> None:
    """One eval.corpora entry: a plain name (it names metrics keys) and a source that exists."""
    key = f"eval.corpora.{name}"
    _require(re.fullmatch(r"[a-z][a-z0-9_]*", name) is not None, key,
             "the name must be lower-case letters, digits and _ (it names the keys ppl_NAME, ...)")
    _require(name not in ("human", "gen0"), key, f"'{name}' names a built-in metric")
    if source.startswith("builtin:"):
        _require(d.source == "builtin", key, "builtin: corpora need data.source=builtin (the language they share)")
        domain = source.removeprefix("builtin:")
        domains = d.language.domains
        _require(domain == "all" or domain.isdigit() and int(domain) < domains, key,
                 f"expected builtin:all or builtin:D with D in 0..{domains - 1} (data.language.domains={domains}), "
                 f"got {source!r}")
    elif source.startswith("hf:"):
        _require(len(source) > 3, key, "expected hf:NAME or hf:NAME/CONFIG")
    else:
        _require(Path(source, "test.txt").is_file(), key, f"{source} holds no test.txt (expected builtin:D, "
                 "builtin:all, hf:NAME[/CONFIG] or a directory with test.txt)")


def _check_pretrain(cfg: Config) -> None:
    p = cfg.pretrain
    if p.source == "none":
        return
    _require(cfg.model.name_or_path is None, "pretrain.source",
             f"{cfg.model.name_or_path} (model.name_or_path) is pretrained already: it is the base; set "
             "pretrain.source=none, or model.name_or_path=null to pretrain a model from scratch")
    if p.source == "files":
        _require(p.path is not None, "pretrain.path", "is required when pretrain.source is 'files'")
        _require(Path(p.path, "train.txt").is_file(), "pretrain.path",
                 f"{p.path} holds no train.txt (the pretraining text)")
    _require(p.sentences >= 1, "pretrain.sentences", f"must be at least 1, got {p.sentences}")
    _require(p.max_blocks is None or p.max_blocks >= 1, "pretrain.max_blocks", "must be at least 1 or null")
    _require(p.epochs >= 1, "pretrain.epochs", f"must be at least 1, got {p.epochs}")
    _require(p.lr > 0, "pretrain.lr", f"must be positive, got {p.lr}")
    _require(0 <= p.seed < 2**32, "pretrain.seed", f"must be in 0..2**32-1, got {p.seed}")


def _check_decoding(d: GenerationConfig | EvalDecodingConfig, prefix: str) -> None:
    """The decoding knobs generation and evaluation share; a null eval.decoding value is generation's."""
    rules = {"num_beams": (lambda v: v >= 1, "must be at least 1"),
             "temperature": (lambda v: v > 0, "must be positive"),
             "top_k": (lambda v: v >= 0, "must be >= 0 (0 turns it off)"),
             "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
             "min_p": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
             "repetition_penalty": (lambda v: v > 0, "must be positive")}
    for key, (ok, problem) in rules.items():
        value = getattr(d, key)
        _require(value is None or ok(value), prefix + key, f"{problem}, got {value}")


def _check_mixing(x: MixingConfig, prefix: str, inherited: str) -> None:
    """The mixing keys' ranges, for the top level or (prefix 'mixing.schedule[i].') one entry's settings."""
    _require(0 <= x.human_fraction <= 1, f"{prefix}human_fraction",
             f"must be a fraction in [0, 1], got {x.human_fraction}")
    _require(x.human_pool == "reuse" or x.strategy == "fixed_fraction", f"{prefix}human_pool",
             f"{x.human_pool}{inherited} applies to strategy fixed_fraction, not {x.strategy}")


def check_schedule(x: MixingConfig, generations: int) -> None:
    """mixing.schedule: mappings with from_generation increasing within 1..generations and known mixing
    keys of the right types (coerced in place, e.g. 1 -> 1.0); the settings each entry yields in range."""
    hints = {k: v for k, v in _hints(MixingConfig).items() if k != "schedule"}
    previous = 0
    for i, entry in enumerate(x.schedule):
        key = f"mixing.schedule[{i}]"
        _require(isinstance(entry, dict), key, f"expected a mapping {{from_generation: k, <mixing keys>}}, "
                                               f"got {entry!r}")
        for name in entry:
            if name != "from_generation" and name not in hints:
                hint = difflib.get_close_matches(str(name), ["from_generation", *hints], n=1)
                extra = f" (did you mean '{key}.{hint[0]}'?)" if hint else ""
                raise ConfigError(f"unknown config key '{key}.{name}'{extra}")
        _require("from_generation" in entry, f"{key}.from_generation", "is required (the first generation "
                                                                        "the entry applies to)")
        k = _coerce(entry["from_generation"], int, f"{key}.from_generation", from_cli=False)
        _require(previous < k <= generations, f"{key}.from_generation",
                 f"must be in {previous + 1}..run.generations={generations} (entries in increasing order), got {k}")
        previous = k
        for name, value in entry.items():
            if name != "from_generation":
                entry[name] = _coerce(value, hints[name], f"{key}.{name}", from_cli=False)
        _check_mixing(x.at(k), f"{key}.", " (set here or before)")


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
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
            dict: "a mapping"}.get(typing.get_origin(tp) or tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, from_cli: bool) -> Any:
    """Check (YAML) or parse (CLI string) `value` as type `tp`; raise ConfigError naming `key`."""
    base, optional = _unwrap_optional(tp)
    # On the command line an empty value is null; a string key takes any other string as it is (run.name=none
    # names the run "none"), other keys read null, none and ~ as null.
    if from_cli and optional and isinstance(value, str) and (
            value == "" or base is not str and value.lower() in ("null", "none", "~")):
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
        # NaN passes no range check and inf none that matters; an integer beyond a float's range is no number
        _require(abs(value) <= sys.float_info.max and value == value, key, f"expected a finite number, got {value!r}")
        return float(value)
    if base is Any:  # a sweep setting's or a schedule entry's value: checked where it is applied
        return value
    if typing.get_origin(base) is list:
        _require(isinstance(value, list), key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(base)
        return [_coerce(v, item, f"{key}[{i}]", from_cli=False) for i, v in enumerate(value)]
    if typing.get_origin(base) is dict:
        _require(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        name, item = typing.get_args(base)
        return {_coerce(k, name, f"{key}.{k}", from_cli=False): _coerce(v, item, f"{key}.{k}", from_cli=False)
                for k, v in value.items()}
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
            hint = difflib.get_close_matches(str(name), list(hints), n=1)
            extra = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"unknown config key '{key}'{extra}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _require(isinstance(value, dict), key, f"expected a mapping of sub-keys, got {value!r}")
            _merge(current, value, key + ".", from_cli)
        elif isinstance(current, dict) and isinstance(value, dict):  # a mapping takes entries, e.g. eval.corpora.NAME=
            setattr(obj, name, {**current, **_coerce(value, hints[name], key, from_cli)})
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


# Keys that name a file or directory. In a config file a relative path is relative to the file's directory
# (the same whatever directory the command runs from); on the command line, to the current directory. The
# model and tokenizer keys name a local path when the value starts with /, . or ~, or names one that exists;
# otherwise a hub name, left as it is.
PATH_KEYS = ("data.path", "tokenizer.name_or_path", "model.name_or_path", "pretrain.path")
_HUB_OR_PATH = ("tokenizer.name_or_path", "model.name_or_path")


def is_local_path(name: str, base: Path = Path()) -> bool:
    """Whether a model or tokenizer name is a local path (relative to `base`) rather than a hub name."""
    return name.startswith((".", "/", "~")) or (base / Path(name).expanduser()).exists()


def resolve_path(key: str, value: Any, base: Path) -> Any:
    """`value` of the path key `key` made absolute against `base`, if it is a relative local path."""
    if not isinstance(value, str) or not value or (key in _HUB_OR_PATH and not is_local_path(value, base)):
        return value
    return os.path.abspath(base / Path(value).expanduser())


def resolve_corpus(value: Any, base: Path) -> Any:
    """An eval.corpora source made absolute against `base` if it is a relative directory (not builtin: or hf:)."""
    if not isinstance(value, str) or value.startswith(("builtin:", "hf:")):
        return value
    return resolve_path("eval.corpora", value, base)


def _resolve_file_paths(values: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a config file's values (its sweep settings and grid included) absolute
    against `base`, the file's directory, in place."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        if isinstance(values.get(section), dict) and name in values[section]:
            values[section][name] = resolve_path(key, values[section][name], base)
    corpora = (values.get("eval") or {}).get("corpora") if isinstance(values.get("eval"), dict) else None
    if isinstance(corpora, dict):
        values["eval"]["corpora"] = {k: resolve_corpus(v, base) for k, v in corpora.items()}
    sweep = values.get("sweep") if isinstance(values.get("sweep"), dict) else {}
    for setting in sweep.get("settings") or []:
        if isinstance(setting, dict):
            for key in PATH_KEYS:
                if key in setting:
                    setting[key] = resolve_path(key, setting[key], base)
    grid = sweep.get("grid")
    if isinstance(grid, dict):
        for key in PATH_KEYS:
            if isinstance(grid.get(key), list):
                grid[key] = [resolve_path(key, v, base) for v in grid[key]]


def load(path: str | Path | None = None, overrides: list[str] | None = None, saved: bool = False) -> Config:
    """Build a checked Config from defaults < YAML file < CLI overrides. Relative paths (PATH_KEYS) are made
    absolute: the file's against its directory, the overrides' against the current one. `saved`: the file
    is a run directory's config.yaml, whose paths are kept as written (resolved when the run began; an
    older run's relative ones meant the current directory)."""
    cfg = Config()
    file_values = read_yaml(path) if path is not None else {}
    if path is not None and not saved:
        _resolve_file_paths(file_values, Path(path).parent)
    _merge(cfg, file_values, "", from_cli=False)
    flat = parse_overrides(overrides or [])
    for key in PATH_KEYS:
        if key in flat:
            flat[key] = resolve_path(key, flat[key], Path())
    for key in flat:
        if key.startswith("eval.corpora."):
            flat[key] = resolve_corpus(flat[key], Path())
    _merge(cfg, _nest(flat), "", from_cli=True)
    # Naming a directory of text files is unambiguous: it means source=files, unless a source is named
    # on the command line too, or the file names both.
    data_file = file_values.get("data") or {}
    if cfg.data.path is not None and "data.source" not in flat and ("data.path" in flat or "source" not in data_file):
        cfg.data.source = "files"
    check(cfg)
    return cfg


def merge_values(cfg: Config, values: dict[str, Any]) -> None:
    """Set dotted keys, typed as YAML gives them (a sweep setting's), on `cfg`, then check it."""
    _merge(cfg, _nest(values), "", from_cli=False)
    check(cfg)


def overridden(cfg: Config, overrides: list[str]) -> Config:
    """A checked copy of `cfg` with `key.sub=value` overrides applied (a sweep's run from its config)."""
    out = copy.deepcopy(cfg)
    _merge(out, _nest(parse_overrides(overrides)), "", from_cli=True)
    check(out)
    return out


def takes_list(key: str) -> bool:
    """Whether the dotted `key` holds a list (mixing.schedule, train.lora.target_modules); False if unknown."""
    obj, (*parents, leaf) = Config(), key.split(".")
    for name in parents:
        obj = getattr(obj, name, None)
        if not dataclasses.is_dataclass(obj):
            return False
    return typing.get_origin(_unwrap_optional(_hints(type(obj)).get(leaf))[0]) is list


# The keys of mixing.strategy fixed_fraction: a run in which no generation mixes that way reads none of them.
FIXED_FRACTION_KEYS = ("mixing.human_fraction", "mixing.fixed_subset", "mixing.complementary", "mixing.human_pool")


def unread_keys(cfg: Config) -> set[str]:
    """Keys whose value does not change what this config's run computes (e.g. mixing.human_fraction when every
    generation replaces or accumulates, the pretrain keys without pretraining)."""
    strategies = {cfg.mixing.at(g).strategy for g in range(1, cfg.run.generations + 1)}
    unread = set() if "fixed_fraction" in strategies else set(FIXED_FRACTION_KEYS)
    if cfg.pretrain.source == "none":
        unread |= {f"pretrain.{f.name}" for f in dataclasses.fields(PretrainConfig) if f.name != "source"}
    return unread


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


# ---------------------------------------------------------------------------------------------
# The schema described: `testbed keys`, from the dataclasses and the comments of this file.


@dataclass
class KeyDoc:
    key: str  # dotted
    type: str  # e.g. "int", "float | null", "replace | fixed_fraction"
    default: str  # as YAML writes it
    comment: str  # the comment lines above the field and the comment after it, joined


def _type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is Literal:
        name = " | ".join(str(a) for a in typing.get_args(base))
    else:
        name = {list: "list", dict: "mapping"}.get(typing.get_origin(base), getattr(base, "__name__", str(base)))
    return name + (" | null" if optional else "")


def _field_comments() -> dict[str, dict[str, str]]:
    """Class name -> field name -> its comment in this file: the comment lines right above the field, then
    the comment at the end of its line."""
    import ast
    import inspect
    import io
    import tokenize

    source = inspect.getsource(sys.modules[__name__])
    own_line, trailing = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (own_line if tok.line.strip().startswith("#") else trailing)[tok.start[0]] = text
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above, line = [], stmt.lineno - 1
                while line in own_line:
                    above.insert(0, own_line[line])
                    line -= 1
                after = [trailing[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in trailing]
                out.setdefault(node.name, {})[stmt.target.id] = " ".join(above + after)
    return out


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def describe_keys(prefix: str = "") -> list[KeyDoc]:
    """Every config key under `prefix` (a section or a key, "" for all; else any key with `prefix` as a part
    of its dotted path, so that `slurm` finds sweep.slurm.*) with its type, default and comment, in schema
    order. A prefix that matches nothing is a ConfigError."""
    comments = _field_comments()

    def walk(obj: Any, path: str) -> list[KeyDoc]:
        docs = []
        hints = _hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                docs += walk(value, f"{path}{f.name}.")
            else:
                docs.append(KeyDoc(f"{path}{f.name}", _type_name(hints[f.name]), _yaml_value(value),
                                   comments.get(type(obj).__name__, {}).get(f.name, "")))
        return docs

    docs = walk(Config(), "")
    prefix = prefix.strip(".")
    chosen = [d for d in docs if not prefix or d.key == prefix or d.key.startswith(prefix + ".")] or \
        [d for d in docs if f".{prefix}." in f".{d.key}."]
    if not chosen:
        hint = difflib.get_close_matches(prefix, [d.key for d in docs] + list(_hints(Config)), n=1)
        raise ConfigError(f"unknown config key '{prefix}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    return chosen


def diff(a: Config, b: Config) -> list[str]:
    """Keys (dotted) whose values differ between two configs."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa if fa[k] != fb.get(k))


def changes(saved: Config, cfg: Config) -> list[str]:
    """Keys `cfg` changes in a run's saved config, on resume. Where a run lives is not what it is (a moved
    run directory resumes), and an unset run.threads means the count the run started with."""
    return [k for k in diff(saved, cfg) if k not in ("run.out_dir", "run.name")
            and not (k == "run.threads" and cfg.run.threads is None)]
