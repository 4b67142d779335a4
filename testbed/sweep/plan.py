"""`testbed plan`: parameter count and peak memory per stage of each run, whether it fits a GPU's memory, and
(from a GPU check's measured rates) its time.

Everything is computed from the model's config (transformers' AutoConfig, the model built on the meta device
to count parameters, no weights loaded) and the run's config. The shapes of hub models come from the local
hub cache, or offline from testbed/model_shapes/ (copies of the public config.json of the models the shipped
configs name, shipped with the package).

Memory, in bytes, for one process on one device (s: data.block_size, b: train.batch_size, h: hidden size,
f: MLP width, L: layers, V: vocabulary, e: 2 under bf16/fp16 autocast, else 4; P: parameters, T: the trained
ones, all P or LoRA's adapters):
- weights: fp32 master weights, 4P; from generation 1 on the generation-0 model is kept for scoring, 4P more;
- gradients and AdamW: 4T + 8T;
- activations saved for the backward pass, per layer s·b·(2·(4h + e·h) + e·(h + 2·kv·d) + e·h + m·e·f + 2h·[dropout])
  (fp32 norm inputs, their outputs, q/k/v with kv key-value heads of d dims, the attention output, m = 2 MLP
  tensors, 4 when gated, 1-byte dropout masks), plus (8 + e)·s·b·h around the layers and, under autocast,
  the cached half-precision copies of the trained weights (2T). SDPA keeps no s×s attention matrix.
  Gradient checkpointing: each layer's fp32 input, 4·s·b·h, and one layer's activations. LoRA: as full
  fine-tuning (the adapters keep the inputs the frozen layers no longer need);
- logits: 12·s·b·V at the loss (the fp32 log-softmax and two gradients), plus e·s·b·V of half-precision logits;
- generation: the KV cache, 2·L·kv·d·e bytes a position, for batch × beams × (prompt + new tokens)
  positions, and one step's fp32 scores (12 bytes per batch × beams × V); evaluation's sampling likewise.
The peak is the largest stage: training (weights, copy, gradients, AdamW, activations, logits) or generation
(weights, copy, cache, scores). Batches that run out of memory halve themselves (testbed/batching.py), so a
generation peak beyond the device is slower, not fatal; a training peak beyond it is fatal.

Time: the run's own work in tokens, each part divided by the GPU check's measured rate for it (see `work`
and `project`), plus checkpoint saves and the start-up and per-generation CPU work that the check's
end-to-end runs measured.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from testbed.config import Config, ConfigError, is_local_path

SHAPES = Path(__file__).resolve().parents[1] / "model_shapes"
GIB = 2**30


def shape_file(name: str) -> Path:
    """The shipped shape (config.json) of hub model `name`: testbed/model_shapes/ORG--NAME.json."""
    return SHAPES / (name.replace("/", "--") + ".json")


def model_shape(cfg: Config):
    """The transformers config of the run's model, and where it came from."""
    from transformers import AutoConfig

    m, name = cfg.model, cfg.model.name_or_path
    if name is None:
        from testbed.model import arch_kwargs

        vocab = cfg.tokenizer.vocab_size
        if cfg.tokenizer.name_or_path is not None:
            from testbed.model import load_tokenizer

            vocab = len(load_tokenizer(cfg, []))
        ids = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)  # within the vocabulary; no effect on sizes
        return AutoConfig.for_model(m.arch, vocab_size=vocab, **ids, **arch_kwargs(m)), \
            f"{m.arch} {m.layers}x{m.width} from scratch, vocabulary {vocab}"
    if not is_local_path(name) and shape_file(name).is_file():
        return AutoConfig.from_pretrained(shape_file(name)), f"{name} (shape: {shape_file(name).name})"
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=m.trust_remote_code), name
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config key 'model.name_or_path': no config for '{name}' ({first}); offline, a hub "
                          f"name needs the local cache or a shape file {shape_file(name)}") from None


def count_parameters(cfg: Config, shape) -> tuple[int, int]:
    """(all parameters, trained ones) of the model built on the meta device: no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(shape)
        total = sum(p.numel() for p in model.parameters())
        if not cfg.train.lora.enabled:
            return total, total
        from testbed.train import attach_lora

        with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            model = attach_lora(model, cfg.train.lora, cfg.run.seed)
        return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class Estimate:
    """One run's figures, in bytes (parameters as counts)."""

    model: str
    parameters: int
    trained: int
    weights: int
    gen0_copy: int
    grads_adamw: int
    activations: int
    logits: int
    kv_cache: int  # generation's: the larger of generation and evaluation is in generate_peak
    gen_batch: str  # batch x beams x positions of that cache (batch x positions for one beam)
    beams: int  # generation.num_beams
    model_type: str
    train_peak: int
    generate_peak: int
    notes: str

    @property
    def peak(self) -> int:
        return max(self.train_peak, self.generate_peak)


def _dims(shape) -> dict[str, int | float | bool]:
    """Hidden size, MLP width, layers, heads, key-value heads, head dimensions, vocabulary, dropout of a config."""
    h, heads = shape.hidden_size, shape.num_attention_heads
    kv = getattr(shape, "num_key_value_heads", None) or heads
    f = next((getattr(shape, k) for k in ("intermediate_size", "ffn_dim", "n_inner") if getattr(shape, k, None)),
             4 * h)
    dropout = max(float(getattr(shape, k, 0) or 0) for k in ("dropout", "resid_pdrop", "hidden_dropout"))
    return dict(h=h, f=f, layers=shape.num_hidden_layers, kv=kv, d=getattr(shape, "head_dim", None) or h // heads,
                vocab=shape.vocab_size, dropout=dropout > 0,
                gated=shape.model_type in ("llama", "qwen2", "mistral", "gemma", "gemma2", "qwen3", "olmo2"))


def kv_cache_bytes(shape, rows: int, positions: int, bytes_per_value: int) -> int:
    """The KV cache of `rows` sequences of `positions` tokens: keys and values for every layer and every
    key-value head (num_key_value_heads: fewer than the query heads under grouped-query attention)."""
    dims = _dims(shape)
    return 2 * dims["layers"] * dims["kv"] * dims["d"] * bytes_per_value * rows * positions


def _cache(shape, precision_bytes: int, batch: int, beams: int, positions: int) -> tuple[int, int]:
    """(KV cache, one decode step's scores) in bytes for `batch` sequences of `beams` beams."""
    rows = batch * beams
    return kv_cache_bytes(shape, rows, positions, precision_bytes), 12 * rows * _dims(shape)["vocab"]


def estimate(cfg: Config) -> Estimate:
    """The run's memory per stage (see the module's docstring), from generation 1 on (with the generation-0
    copy kept for scoring)."""
    from testbed.evaluation import eval_decoding

    shape, source = model_shape(cfg)
    total, trained = count_parameters(cfg, shape)
    dims = _dims(shape)
    t, g = cfg.train, cfg.generation
    e = 4 if t.precision == "fp32" else 2
    h, f, layers = dims["h"], dims["f"], dims["layers"]
    tokens = cfg.data.block_size * t.batch_size
    per_layer = tokens * (2 * (4 * h + e * h) + e * (h + 2 * dims["kv"] * dims["d"]) + e * h
                          + (4 if dims["gated"] else 2) * e * f + (2 * h if dims["dropout"] else 0))
    around = tokens * (8 + e) * h + (2 * trained if e < 4 else 0)
    if t.gradient_checkpointing:
        activations = layers * tokens * 4 * h + per_layer + around
    else:
        activations = layers * per_layer + around
    logits = tokens * dims["vocab"] * (12 + (e if e < 4 else 0))
    weights = copy = 4 * total
    grads_adamw = 12 * trained
    prompt = 1 if g.mode == "unconditional" else g.prompt_tokens
    kv, scores = _cache(shape, e, g.batch_size, g.num_beams, prompt + g.max_new_tokens)
    ev = eval_decoding(cfg)
    eval_prompt = 1 if g.mode == "unconditional" else cfg.eval.prompt_tokens
    eval_kv, eval_scores = _cache(shape, e, cfg.eval.batch_size, ev.num_beams, eval_prompt + cfg.eval.max_new_tokens)
    notes = [f"LoRA r{t.lora.rank}: {trained / 1e6:.1f}M trained"] if t.lora.enabled else []
    notes += ["gradient checkpointing"] if t.gradient_checkpointing else []
    return Estimate(
        model=source, parameters=total, trained=trained, weights=weights, gen0_copy=copy, grads_adamw=grads_adamw,
        activations=activations, logits=logits, kv_cache=kv, model_type=shape.model_type, beams=g.num_beams,
        gen_batch="x".join(map(str, [g.batch_size, *([g.num_beams] if g.num_beams > 1 else []),
                                     prompt + g.max_new_tokens])),
        train_peak=weights + copy + grads_adamw + activations + logits,
        generate_peak=weights + copy + max(kv + scores, eval_kv + eval_scores), notes=", ".join(notes))


# ---------------------------------------------------------------------------------------------
# Work: what a run computes, in tokens, from its own config and data.

# Characters a token of English text under a GPT-2-style BPE: WikiText-2's raw valid and test splits give
# 4.57 and 4.49 (against the counts below), the built-in language under its trained BPE 4.3.
CHARS_PER_TOKEN = 4.5
# WikiText-2 in 64-token blocks under GPT-2's BPE with the shumailov2024 preprocessing (each raw line tokenized
# with OPT's BOS): train (counted on the <unk> variant), raw valid, raw test. Other tokenizers give counts
# within about 10% of these.
WIKITEXT2_TOKENS = {"train": 37571 * 64, "valid": 3922 * 64, "test": 4494 * 64}
KNOWN_TOKENS = {(name, config): WIKITEXT2_TOKENS for name in ("wikitext", "Salesforce/wikitext")
                for config in ("wikitext-2-raw-v1", "wikitext-2-v1")}
# The parts of a run's work, each timed by its own rate (see `needs`), and the stage of the run's timing.json
# each part falls in.
PARTS = ("pretraining", "train", "validation", "generation", "scoring", "evaluation", "eval samples")
STAGE_OF = {"train": "train", "validation": "train", "generation": "generate", "scoring": "score",
            "evaluation": "evaluate", "eval samples": "evaluate"}


@dataclass(frozen=True)
class Counts:
    """Blocks (data.block_size tokens) of the human splits a run reads, after data.max_train_blocks and
    data.max_eval_blocks (the test split keeps its last partial block, as the run does), the tokens of the
    eval.corpora test texts, the pretraining blocks, and where the sizes come from."""

    train: int
    valid: int
    test: int
    source: str
    corpora: int = 0
    pretraining: int = 0


def _tokens(lines: list[str]) -> int:
    return round(sum(map(len, lines)) / CHARS_PER_TOKEN)


def _cap(n: int, cap: int | None) -> int:
    return min(n, cap) if cap else n


def data_counts(cfg: Config) -> Counts:
    """The run's split sizes: WikiText-2's known token counts, else estimated from the text's characters
    (files and the built-in language are read; another hub dataset needs the local datasets cache). A text
    that cannot be read is a DataError."""
    from testbed.data import eval_lines, load_corpus

    d, b = cfg.data, cfg.data.block_size
    known = KNOWN_TOKENS.get((d.hf_name, d.hf_config)) if d.source == "hf" else None
    if known is not None:
        tokens, source = known, f"{d.hf_name} {d.hf_config}: its token counts under GPT-2's BPE"
    else:
        text = load_corpus(d, cfg.run.seed)
        tokens = {s: _tokens(getattr(text, s)) for s in ("train", "valid", "test")}
        source = f"estimated from the text's characters, {CHARS_PER_TOKEN} a token"
    corpora = sum(min(_tokens(eval_lines(src, d, cfg.run.seed)), (d.max_eval_blocks or math.inf) * b)
                  for src in cfg.eval.corpora.values())
    pretraining = 0
    if cfg.pretrain.source != "none":
        from testbed import pretrain

        pretraining = _cap(_tokens(pretrain.text(cfg).train) // b, cfg.pretrain.max_blocks)
    return Counts(train=_cap(tokens["train"] // b, d.max_train_blocks), valid=_cap(tokens["valid"] // b,
                  d.max_eval_blocks), test=_cap(math.ceil(tokens["test"] / b), d.max_eval_blocks), source=source,
                  corpora=int(corpora), pretraining=pretraining)


def examples_per_generation(cfg: Config, counts: Counts) -> int:
    """Synthetic examples each generation writes: generation.num_samples, or one per human training block."""
    return cfg.generation.num_samples or counts.train


def trained_blocks(cfg: Config, counts: Counts, g: int) -> int:
    """Blocks generation g trains on: its mix (mixing.at(g)) of human blocks and synthetic examples of
    generation.max_new_tokens (curation counted as keeping everything), packed into blocks."""
    from testbed.mixing import human_share

    if g == 0:
        return counts.train
    b, new, n = cfg.data.block_size, cfg.generation.max_new_tokens, examples_per_generation(cfg, counts)
    m = cfg.mixing.at(g)
    if m.strategy == "replace":
        tokens = n * new
    elif m.strategy == "fixed_fraction":
        human = min(human_share(m, n), counts.train)
        tokens = human * b + (n - human) * new
    else:
        pool = counts.train * b + g * n * new  # all human blocks and every synthetic set so far
        tokens = pool if m.strategy == "accumulate" else pool * counts.train / (counts.train + g * n)
    if cfg.curate.resample == "importance":
        tokens *= cfg.curate.resample_upsample
    return int(tokens) // b


def evaluations(cfg: Config, blocks: int, epochs: int) -> int:
    """Validation passes of one generation's training: one per epoch, and every train.eval_every steps."""
    t = cfg.train
    per_epoch = math.ceil(math.ceil(blocks / t.batch_size) / t.grad_accum)
    if not t.eval_every:
        return epochs
    return epochs + sum(1 for s in range(t.eval_every, per_epoch * epochs + 1, t.eval_every) if s % per_epoch)


def generation_work(cfg: Config, counts: Counts, g: int) -> dict[str, int]:
    """Tokens of each part of generation g: trained (x epochs), validated, generated (x beams, g >= 1),
    scored under generation 0 (g >= 1), evaluated (forward passes: the test split, eval.corpora, and the
    evaluation samples under generation 0 twice and the model once), and sampled for evaluation (x beams)."""
    from testbed.evaluation import eval_decoding

    t, gen, e, b = cfg.train, cfg.generation, cfg.eval, cfg.data.block_size
    epochs = (t.gen0_epochs or t.epochs) if g == 0 else t.epochs
    blocks = trained_blocks(cfg, counts, g)
    samples = e.num_samples * e.max_new_tokens
    work = {"train": blocks * b * epochs, "validation": counts.valid * b * evaluations(cfg, blocks, epochs),
            "evaluation": counts.test * b + counts.corpora + 3 * samples,
            "eval samples": samples * eval_decoding(cfg).num_beams}
    if g >= 1:
        n = examples_per_generation(cfg, counts) * gen.max_new_tokens
        work.update({"generation": n * gen.num_beams, "scoring": n})
    return work


def run_work(cfg: Config, counts: Counts) -> dict[str, int]:
    """Tokens of the work done once a run: pretraining (x pretrain.epochs), the base model's zero-shot
    evaluation and the human baseline (the evaluation samples' human continuations under generation 0,
    twice, and held-out human text shaped like synthetic data)."""
    b, e = cfg.data.block_size, cfg.eval
    return {"pretraining": counts.pretraining * b * cfg.pretrain.epochs,
            "evaluation": counts.test * b + counts.corpora + 2 * e.num_samples * e.max_new_tokens
            + counts.test * cfg.generation.max_new_tokens}


def total_work(cfg: Config, counts: Counts) -> dict[str, int]:
    """Tokens of each part over the whole run: generations 0..run.generations and the work done once."""
    total = dict.fromkeys(PARTS, 0)
    for work in (run_work(cfg, counts), *(generation_work(cfg, counts, g) for g in range(cfg.run.generations + 1))):
        for part, n in work.items():
            total[part] += n
    return total


# ---------------------------------------------------------------------------------------------
# Rates, from a GPU check's JSON (scripts/gpu_check.py), and the time they give.


@dataclass(frozen=True)
class Rate:
    """One throughput the GPU check measured: tokens a second of a stage (train: trained tokens, validation
    apart; generate: new tokens x beams; forward: scored tokens) on one model shape, precision and batch."""

    stage: str  # train | generate | forward
    shape: str  # the hub model whose shape it ran
    model_type: str
    parameters: int
    precision: str
    batch: int
    sequence: int  # tokens a sequence (generate: new tokens, after a prompt as long)
    tokens_per_s: float
    variant: str = ""  # train: full | lora, "+ checkpointing"; generate: beam | one beam

    def describe(self) -> str:
        """What it was measured as: shape, precision, batch and variant."""
        return " ".join(x for x in (self.shape, self.precision, f"batch {self.batch}", self.variant) if x)


@dataclass(frozen=True)
class Model:
    """What identifies a run's model shape: the same model type and parameter count as a measured one."""

    name: str
    model_type: str
    parameters: int

    def same(self, model_type: str, parameters: int) -> bool:
        return (model_type, parameters) == (self.model_type, self.parameters)


@dataclass(frozen=True)
class Choice:
    """The rate that times one part of a run, scaled when it comes from another shape, and how it was chosen."""

    rate: Rate
    tokens_per_s: float
    notes: tuple[str, ...] = ()


@dataclass
class GpuCheck:
    """A GPU check's JSON: the device, its memory (bytes), the mode (full, or tiny: toy sizes), the rates,
    the checkpoint saves' speed per shape, and its end-to-end runs (start-up and per-generation CPU work;
    each with config, shape, model_type, parameters, startup_s and other_per_generation_s)."""

    path: str
    device: str
    memory: int | None
    mode: str
    rates: list[Rate]
    saves: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)


def parse_gpu_check(data: dict, path: str) -> GpuCheck:
    """A GPU check from its JSON's content; one without rates is from an older check (a ConfigError)."""
    if not isinstance(data, dict) or "rates" not in data:
        raise ConfigError(f"--gpu-check {path}: written by an older scripts/gpu_check.py (no per-shape rates); "
                          "measure again with the current one")
    keys = Rate.__dataclass_fields__
    rates = [Rate(**{k: r[k] for k in keys if k in r}) for r in data["rates"] if "tokens_per_s" in r]
    runs = [r for r in data.get("protocols", []) if isinstance(r, dict)]
    identity = {"shape", "model_type", "parameters"}
    return GpuCheck(path, str(data.get("device", "?")), data.get("memory_bytes"), str(data.get("mode", "?")), rates,
                    [r["save"] for r in runs if {*identity, "bytes_per_s"} <= set(r.get("save", {}))],
                    [r for r in runs if {*identity, "config", "startup_s", "other_per_generation_s"} <= set(r)])


def load_gpu_check(path: str) -> GpuCheck:
    """A GPU check's JSON; a missing, unreadable or older one is a ConfigError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--gpu-check {path}: cannot read it ({type(exc).__name__})") from None
    return parse_gpu_check(data, path)


def _shape_distance(model: Model, model_type: str, parameters: int) -> float:
    """0 for the same shape, else 1 + |log| of the parameter ratio: nearer in size is nearer."""
    return 0.0 if model.same(model_type, parameters) else 1.0 + abs(math.log(parameters / model.parameters))


# Which differences from the run a rate may have, least important last: precision first (fp32 runs several
# times slower than bf16 on a GPU); for generation the decoding before the shape (a beam-search step serves
# batch x beams rows), for training the shape before the method (LoRA's smaller backward pass against the
# recomputation of checkpointing).
ORDER = {"train": ("precision", "shape", "variant", "batch"), "generate": ("precision", "variant", "shape", "batch"),
         "forward": ("precision", "shape", "batch")}


class Need(NamedTuple):
    """The rate one part of a run needs: its stage, precision, batch, tokens a sequence and variant."""

    stage: str
    precision: str
    batch: int
    sequence: int
    variant: str = ""


def _decoding(beams: int) -> str:
    return "beam" if beams > 1 else "one beam"


def needs(cfg: Config) -> dict[str, Need]:
    """The rate each part of the run needs (PARTS; pretraining only when the run pretrains): training at
    train.batch_size with its method, validation's forward passes at train.batch_size, generation at
    generation.batch_size with its decoding, scoring and evaluation at eval.batch_size, evaluation samples
    with eval's decoding; all under train.precision."""
    from testbed.evaluation import eval_decoding

    t, g, e, b, p = cfg.train, cfg.generation, cfg.eval, cfg.data.block_size, cfg.train.precision
    eval_beams = eval_decoding(cfg).num_beams
    checkpointing = " + checkpointing" if t.gradient_checkpointing else ""
    out = {"pretraining": Need("train", p, t.batch_size, b, "full" + checkpointing)} \
        if cfg.pretrain.source != "none" else {}
    return {**out, "train": Need("train", p, t.batch_size, b, ("lora" if t.lora.enabled else "full") + checkpointing),
            "validation": Need("forward", p, t.batch_size, b),
            "generation": Need("generate", p, g.batch_size, g.max_new_tokens, _decoding(g.num_beams)),
            "scoring": Need("forward", p, e.batch_size, g.max_new_tokens),
            "evaluation": Need("forward", p, e.batch_size, b),
            "eval samples": Need("generate", p, e.batch_size, e.max_new_tokens, _decoding(eval_beams))}


def pick(rates: list[Rate], model: Model, need: Need) -> Choice | None:
    """The measured rate nearest the one needed: the same shape, precision, batch and variant if measured,
    else the nearest in ORDER's terms. A rate of another shape is scaled by the parameter ratio when the
    run's model is larger (compute per token grows with it) and kept as measured when it is smaller (small
    models are bound by per-step overheads: the time is then an upper bound). None if the stage was not
    measured."""
    candidates = [r for r in rates if r.stage == need.stage]
    if not candidates:
        return None

    def distance(r: Rate) -> tuple:
        d = {"precision": r.precision != need.precision, "variant": r.variant != need.variant,
             "shape": _shape_distance(model, r.model_type, r.parameters), "batch": abs(math.log(r.batch / need.batch))}
        return (*(d[k] for k in ORDER[need.stage]), abs(math.log(r.sequence / need.sequence)))

    r = min(candidates, key=distance)
    scale, notes = 1.0, []
    if not model.same(r.model_type, r.parameters):
        scale = min(1.0, r.parameters / model.parameters)
        how = f"x {scale:.2f}, the parameter ratio" if scale < 1 else "as measured: the run's model is smaller"
        notes.append(f"nearest shape ({_figure(r.parameters / 1e6)}M parameters for "
                     f"{_figure(model.parameters / 1e6)}M), {how}")
    if r.precision != need.precision:
        notes.append(f"{r.precision} for {need.precision}")
    if need.variant and r.variant != need.variant:
        notes.append(f"{r.variant} for {need.variant}")
    if r.batch != need.batch:
        notes.append(f"batch {r.batch} for {need.batch}")
    if r.sequence != need.sequence:
        notes.append(f"{r.sequence}-token sequences for {need.sequence}")
    return Choice(r, r.tokens_per_s * scale, tuple(notes))


def choices(cfg: Config, model: Model, check: GpuCheck) -> dict[str, Choice | None]:
    """The rate that times each part of the run (see `needs` and `pick`)."""
    return {part: pick(check.rates, model, need) for part, need in needs(cfg).items()}


def _nearest(entries: list[dict], model: Model) -> dict | None:
    return min(entries, key=lambda x: _shape_distance(model, x["model_type"], x["parameters"])) if entries else None


@dataclass
class Projection:
    """One run's projected time: seconds and work (tokens; saves: bytes) per part, the rate of each, and
    what is missing (a part with work but no measured rate: the time is then not projected)."""

    seconds: dict[str, float]
    work: dict[str, int]
    rates: dict[str, Choice | None]
    save: dict | None
    end_to_end: dict | None
    missing: list[str]
    counts: Counts

    @property
    def hours(self) -> float | None:
        return None if self.missing else sum(self.seconds.values()) / 3600


def project(cfg: Config, model: Model, counts: Counts, check: GpuCheck) -> Projection:
    """The run's time on the GPU check's device: each part's tokens over its rate, a checkpoint save per
    generation (4 bytes a parameter) at the measured speed, and the start-up and per-generation CPU work
    (curation, metrics, writing) of the check's end-to-end run of the nearest shape."""
    work = total_work(cfg, counts)
    rates = choices(cfg, model, check)
    seconds, missing = {}, []
    for part, tokens in work.items():
        if tokens:
            if rates.get(part) is None:
                missing.append(part)
            else:
                seconds[part] = tokens / rates[part].tokens_per_s
    saves = cfg.run.generations + 1
    work["saves"] = saves * 4 * model.parameters
    save = _nearest(check.saves, model)
    seconds["saves"] = work["saves"] / save["bytes_per_s"] if save else 0.0
    end_to_end = _nearest(check.runs, model)
    seconds["other"] = (end_to_end["startup_s"] + cfg.run.generations * end_to_end["other_per_generation_s"]
                        if end_to_end else 0.0)
    return Projection(seconds, work, rates, save, end_to_end, missing, counts)


def stage_seconds(cfg: Config, model: Model, counts: Counts, check: GpuCheck, g: int) -> dict[str, float]:
    """Generation g's projected seconds per stage of the run's timing.json (what the GPU check compares its
    end-to-end run with)."""
    rates = choices(cfg, model, check)
    out: dict[str, float] = {}
    for part, tokens in generation_work(cfg, counts, g).items():
        if rates[part] is None:
            raise ValueError(f"the GPU check measured no rate for {part}")
        out[STAGE_OF[part]] = out.get(STAGE_OF[part], 0.0) + tokens / rates[part].tokens_per_s
    return out


# ---------------------------------------------------------------------------------------------
# The report.


def gib(n: int) -> str:
    """Bytes in GiB: one decimal from 1 GiB on, else two significant digits (0.0042, 0.47, 12.9)."""
    x = n / GIB
    return f"{x:.1f}" if x >= 0.95 else f"{x:.2g}"


def parse_memory(text: str) -> int:
    """A GPU memory size, e.g. 80GiB (2^30 bytes each) or 80GB (10^9), in bytes; anything else a ConfigError."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(GiB|GB)\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"--gpu-memory {text}: expected a size with its unit, e.g. 80GiB or 80GB")
    return int(float(m.group(1)) * (GIB if m.group(2).lower() == "gib" else 10**9))


def fits(est: Estimate, memory: int) -> str:
    """Whether the run fits `memory`: yes; tight (its peak within 10% of it); slower (generation's peak beyond
    it: those batches halve themselves); no (training's peak beyond it: the run fails)."""
    if est.train_peak > memory:
        return "no"
    if est.generate_peak > memory:
        return "slower"
    return "tight" if est.peak > 0.9 * memory else "yes"


def grouped(rows: list[tuple[str, list[str]]]) -> list[list[str]]:
    """Rows with equal cells as one, labelled with the first run's name and the count of the others."""
    groups: dict[tuple, list[str]] = {}
    for name, cells in rows:
        groups.setdefault(tuple(cells), []).append(name)
    return [[names[0] + (f" (+{len(names) - 1} alike)" if len(names) > 1 else ""), *cells]
            for cells, names in groups.items()]


def format_table(header: list[str], body: list[list[str]]) -> str:
    """A plain aligned table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def memory_table(estimates: list[tuple[str, Estimate]], memory: int | None) -> str:
    """Each group of runs with the same model and figures: parameters and GiB per stage, and whether they fit
    `memory` (when given)."""
    kv = ("beam " if any(est.beams > 1 for _, est in estimates) else "") + "KV cache GiB"
    header = ["run", "parameters M", "weights GiB", "gen-0 copy GiB", "grads+AdamW GiB", "activations GiB",
              "logits GiB", "train peak GiB", kv, "generate peak GiB", "peak GiB"]
    header += [f"fits {gib(memory)} GiB"] if memory else []
    rows = []
    for name, est in estimates:
        cells = [f"{est.parameters / 1e6:,.1f}", gib(est.weights), gib(est.gen0_copy), gib(est.grads_adamw),
                 gib(est.activations), gib(est.logits), gib(est.train_peak), f"{gib(est.kv_cache)} ({est.gen_batch})",
                 gib(est.generate_peak), gib(est.peak)] + ([fits(est, memory)] if memory else [])
        rows.append((name, [est.model + (f": {est.notes}" if est.notes else ""), *cells]))
    # Rows are grouped by model as well as by their figures; the model is listed below the table.
    body = [[label, *cells[1:]] for label, *cells in grouped(rows)]
    return format_table(header, body)


def _millions(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _figure(x: float) -> str:
    """A rate or count: thousands separated, small ones to three significant digits."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def time_section(runs: list[tuple[str, Config, Estimate, Projection | str]],
                 check: GpuCheck) -> tuple[list[str], float]:
    """The work and time tables, the rates each part used, the sweep's total; and the longest run's hours."""
    projected = [(name, cfg, est, p) for name, cfg, est, p in runs
                 if isinstance(p, Projection) and p.hours is not None]
    out = [f"time, projected from the GPU check on {check.device} ({check.path}):"]
    if check.mode != "full":
        out.append(f"  the GPU check ran at toy sizes ({check.mode}): its rates measure nothing real")
    for name, _, _, p in runs:
        if isinstance(p, str):
            out.append(f"  {name}: not projected: {p}")
        elif p.missing:
            out.append(f"  {name}: not projected: the GPU check measured no rate for {', '.join(p.missing)}")
    if not projected:
        return out, 0.0
    parts = [k for k in [*PARTS, "saves", "other"] if any(p.seconds.get(k) for *_, p in projected)]
    token_parts = [k for k in PARTS if k in parts]
    out += ["", format_table(["work (M tokens)", *token_parts], grouped(
        [(name, [_millions(p.work[k]) for k in token_parts]) for name, _, _, p in projected])), ""]
    out += [format_table(["time (h)", *parts, "total"], grouped(
        [(name, [f"{p.seconds.get(k, 0) / 3600:.2f}" for k in parts] + [f"{p.hours:.2f}"])
         for name, _, _, p in projected])), ""]
    rows: dict[tuple, list[str]] = {}
    fixed: dict[str, list[str]] = {}  # what saves and other come from -> the models they time
    for _, _, est, p in projected:
        model = est.model.split(" (")[0]
        for part in (k for k in token_parts if p.work[k]):
            c = p.rates[part]
            rows.setdefault((model, part, c), [model, part, _figure(c.tokens_per_s), c.rate.describe(),
                                               "; ".join(c.notes) or "-"])
        save, e = p.save, p.end_to_end
        text = (f"a checkpoint a generation (4 bytes a parameter) at {save['bytes_per_s'] / 2**20:,.0f} MiB/s, "
                f"measured on {save['shape']}; " if save else "no save measured; ")
        text += (f"other: start-up {e['startup_s']:.0f} s + {e['other_per_generation_s']:.0f} s a generation of "
                 f"CPU work (curation, metrics, writing), from the GPU check's one-generation run of {e['config']} "
                 f"on {e['shape']}" if e else "other: no end-to-end run measured, start-up and CPU work not counted")
        fixed.setdefault(text, []).append(model)
    out += [format_table(["model", "part", "tokens/s", "measured as", "differs from the run"], list(rows.values())),
            ""]
    out += [f"saves and other of {', '.join(dict.fromkeys(models))}: {text}" for text, models in fixed.items()]
    out += list(dict.fromkeys(f"data: {p.counts.source}" for *_, p in projected))
    hours = [p.hours for *_, p in projected]
    parallel = projected[0][1].sweep.slurm.array_parallelism
    out.append(f"sweep: {sum(hours):.1f} GPU-hours for {len(hours)} run{'s' * (len(hours) > 1)}, about "
               f"{math.ceil(len(hours) / parallel) * max(hours):.1f} h as a Slurm array ({parallel} at once, a GPU "
               f"each; shared prefixes not counted)")
    return out, max(hours)


def next_step(path: str | None, overrides: list[str], runs: list[tuple[str, Config]], verdicts: list[str],
              check: GpuCheck | None, longest: float) -> str:
    """What to do next: make training fit, measure the rates, or submit with a time limit from the projection."""
    if "no" in verdicts:
        return ("next: training does not fit: lower train.batch_size (train.grad_accum keeps the effective batch), "
                "or set train.gradient_checkpointing=true or train.lora.enabled=true, and plan again")
    again = shlex.join(["testbed", "plan", *([path] if path else []), *overrides])
    if check is None or check.mode != "full":
        return ("next: measure the GPU's rates once, on the GPU the runs will use, from a testbed checkout: python "
                f"scripts/gpu_check.py --out gpu_check.json; then {again} --gpu-check gpu_check.json for the time")
    if not longest:
        return "next: the time is not projected (see above): fix what it names, or measure again, and plan again"
    minutes = math.ceil(1.5 * longest * 60)
    slurm = runs[0][1].sweep.slurm
    if path is None:
        return f"next: {shlex.join(['testbed', 'run', *overrides])} (about {longest:.1f} h on that GPU)"
    submit = ["testbed", "sweep", path, *overrides, "--launcher", "slurm", "--time-min", str(minutes)]
    submit += ["--gpus-per-run", "1"] if slurm.gpus_per_run == 0 else []
    return (f"next: {shlex.join(submit)}  (time limit 1.5x the longest run's {longest:.2f} h; the config asks for "
            f"sweep.slurm.time_min {slurm.time_min})")


def report(path: str | None, overrides: list[str], runs: list[tuple[str, Config]], check: GpuCheck | None = None,
           gpu_memory: int | None = None) -> str:
    """The terminal summary of `testbed plan`: one row per group of runs with the same memory figures (and,
    given a memory, whether they fit it), the models, then with a GPU check each run's work and projected
    time with the rates used, and the next step."""
    from testbed.data import DataError

    memory = gpu_memory or (check.memory if check else None)
    estimates = [(name, cfg, estimate(cfg)) for name, cfg in runs]
    out = [memory_table([(name, est) for name, _, est in estimates], memory), ""]
    for model in dict.fromkeys(est.model + (f": {est.notes}" if est.notes else "") for _, _, est in estimates):
        out.append(f"model {model}")
    out.append("GiB = 2^30 bytes, one process on one device; the gen-0 copy is held from generation 1 on; KV cache: "
               "generation's, batch x beams x positions (batch x positions with one beam), evaluation's is in the "
               "generate peak")
    verdicts = [fits(est, memory) for _, _, est in estimates] if memory else []
    if memory:
        whose = " (the GPU check's device)" if not gpu_memory else ""
        out.append(f"fits {gib(memory)} GiB{whose}: yes; tight: the peak within 10% of it; slower: generation's peak "
                   "beyond it (its batches halve themselves); no: training's peak beyond it (the run fails)")
    longest = 0.0
    if check is not None:
        counted: dict[str, Counts] = {}
        projections = []
        for name, cfg, est in estimates:
            key = repr((cfg.data, cfg.eval.corpora, cfg.pretrain))
            try:
                if key not in counted:
                    counted[key] = data_counts(cfg)
                model = Model(cfg.model.name_or_path or est.model, est.model_type, est.parameters)
                projections.append((name, cfg, est, project(cfg, model, counted[key], check)))
            except DataError as exc:
                projections.append((name, cfg, est, f"its data: {exc}"))
        lines, longest = time_section(projections, check)
        out += ["", *lines]
    out.append(next_step(path, overrides, runs, verdicts, check, longest))
    return "\n".join(out)
