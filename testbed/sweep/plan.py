"""`testbed plan`: parameter count and peak memory per stage of each run, and (from a GPU check) its time.

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
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

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
    kv_cache: int  # generation's (beam search): the larger of generation and evaluation is in generate_peak
    gen_batch: str  # batch x beams x positions of that cache
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
        activations=activations, logits=logits, kv_cache=kv,
        gen_batch=f"{g.batch_size}x{g.num_beams}x{prompt + g.max_new_tokens}",
        train_peak=weights + copy + grads_adamw + activations + logits,
        generate_peak=weights + copy + max(kv + scores, eval_kv + eval_scores), notes=", ".join(notes))


# ---------------------------------------------------------------------------------------------
# Time, from a GPU check's JSON (scripts/gpu_check.py).


def run_hours(gpu_check: dict, config_name: str, base_generations: int, generations: int) -> tuple[float, str] | None:
    """Projected hours of one run of the config `config_name` (its file's stem) with `generations`, from the
    GPU check's projection for that config (made for `base_generations`); None if it measured none."""
    for p in gpu_check.get("protocols", []):
        j = p.get("projected") if isinstance(p, dict) else None
        if p.get("config") == config_name and j and "run_hours" in j:
            extra = (generations - base_generations) * j.get("per_generation_s", 0.0) / 3600
            return j["run_hours"] + extra, str(p.get("model", "?"))
    return None


def gib(n: int) -> str:
    """Bytes in GiB: one decimal from 1 GiB on, else two significant digits (0.0042, 0.47, 12.9)."""
    x = n / GIB
    return f"{x:.1f}" if x >= 0.95 else f"{x:.2g}"


COLUMNS = ["run", "parameters", "weights", "gen-0 copy", "grads+AdamW", "activations", "logits", "train peak",
           "beam KV cache", "generate peak", "peak GiB"]


def rows(runs: list[tuple[str, Estimate, float | None]]) -> list[tuple[str, list[str]]]:
    """Runs with the same figures grouped: (label, cells), the label the first run's name and the count."""
    groups: dict[tuple, list[str]] = {}
    cells: dict[tuple, list[str]] = {}
    for name, est, hours in runs:
        row = [f"{est.parameters / 1e6:,.1f}M", gib(est.weights), gib(est.gen0_copy), gib(est.grads_adamw),
               gib(est.activations), gib(est.logits), gib(est.train_peak),
               f"{gib(est.kv_cache)} ({est.gen_batch})", gib(est.generate_peak), gib(est.peak)]
        if hours is not None:
            row.append(f"{hours:.2f}")
        key = (est.model, est.notes, *row)
        groups.setdefault(key, []).append(name)
        cells[key] = row
    return [(f"{names[0]}" + (f" (+{len(names) - 1} alike)" if len(names) > 1 else ""), cells[k])
            for k, names in groups.items()]


def format_table(header: list[str], body: list[list[str]]) -> str:
    """A plain aligned table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def report(path: str | None, runs: list[tuple[str, Config]], gpu_check: dict | None) -> str:
    """The terminal summary of `testbed plan`: one row per group of runs with the same figures, then the
    models and notes, then the sweep's time if a GPU check was given."""
    config_name = Path(path).stem if path else "default"
    base_generations = runs[0][1].run.generations
    if path is not None:
        from testbed import config

        base_generations = config.load(path).run.generations
    estimated = []
    for name, cfg in runs:
        found = gpu_check and run_hours(gpu_check, config_name, base_generations, cfg.run.generations)
        estimated.append((name, estimate(cfg), found[0] if found else None))
    hours = [h for _, _, h in estimated if h is not None]
    header = COLUMNS + (["time h"] if hours else [])
    out = [format_table(header, [[label, *cells] for label, cells in rows(estimated)]), ""]
    for model in dict.fromkeys(f"{est.model}" + (f": {est.notes}" if est.notes else "") for _, est, _ in estimated):
        out.append(f"model {model}")
    out.append("GiB = 2^30 bytes, one process on one device; the gen-0 copy is held from generation 1 on; "
               "beam KV cache: batch x beams x positions (generation's; evaluation's is in the generate peak)")
    if gpu_check is not None:
        found = run_hours(gpu_check, config_name, base_generations, base_generations)
        if found is None:
            out.append(f"time: the GPU check has no projection for {config_name}")
        else:
            parallel = runs[0][1].sweep.slurm.array_parallelism
            out.append(f"time, projected from the GPU check on {gpu_check.get('device', '?')} (measured with "
                       f"{found[1]}; runs of other models are projected as it): {sum(hours):.1f} GPU-hours for "
                       f"{len(hours)} runs, about {math.ceil(len(hours) / parallel) * max(hours):.1f} h as a Slurm "
                       f"array ({parallel} at once, a GPU each; shared prefixes not counted)")
    return "\n".join(out)


def load_gpu_check(path: str) -> dict:
    """A GPU check's JSON; a missing or unreadable file is a ConfigError."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--gpu-check {path}: cannot read it ({type(exc).__name__})") from None
