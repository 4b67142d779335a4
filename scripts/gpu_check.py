"""Measure, in one command, what a GPU does with testbed, and project the wall time of the shipped protocols.

    bash scripts/gpu_launch.sh [--out gpu_check.json]    # on the lent GPU machine (offline, wheels carried)
    python scripts/gpu_check.py [--out gpu_check.json]   # one GPU, testbed and its dependencies installed
    python scripts/gpu_check.py --cpu --tiny             # the same code at toy sizes on a CPU

1. On an OPT-125m-shaped model (random weights: the timing does not depend on them), through testbed's own
   functions: training tokens/s in fp32 and bf16 (`testbed.train.train`, validation timed apart); beam-5
   64->64 generation tokens/s at the paper's batch in both precisions and the largest batch that fits in bf16
   (`testbed.generate.generate`; batches whose KV cache cannot fit the free GPU memory are not tried);
   sampling tokens/s (top-p, one beam); evaluation tokens/s (`next_token_stats` on human-shaped blocks, as
   each generation's evaluation does). Each is warmed up by the same work at full size, then times at least
   3 batches; the peak GPU memory allocated and reserved of each.
2. One generation (models 0 and 1) of each shipped GPU protocol, run by `testbed run` on a random-weight
   checkpoint of its largest model saved like the hub's (OPT-125m fp16, Pythia-410m fp16, SmolLM2-1.7B bf16
   with LoRA) and a WikiText-like corpus of a few thousand training blocks (valid and test splits at
   WikiText-2's size): per-stage times from the run's timing.json, and the time of one checkpoint save. Each
   protocol's files are deleted once its times are read.
3. From these, the projected wall time of each shipped config in full: its generations, its epochs, and its
   sweep's run count (settings x grid), serially on this GPU and as a Slurm array with a GPU per run. See
   `project`. An estimate, not a measurement.

Writes one JSON (--out) and its table (the same name, .txt) after every stage, atomically: a stage that fails
is recorded (its error in the JSON) and the next one runs. Nothing is downloaded: the machine may have no
network.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import rehearse_paper  # noqa: E402  (beside this script: first on sys.path when it runs)
import torch  # noqa: E402

from testbed import config, rundir  # noqa: E402
from testbed.config import GenerationConfig, ModelConfig, TrainConfig  # noqa: E402
from testbed.mixing import human_examples  # noqa: E402
from testbed.sweep.plan import kv_cache_bytes  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# WikiText-2 in 64-token blocks under GPT-2's BPE with the paper's preprocessing (each raw line tokenized with
# OPT's BOS), counted from ../shared/data: train (the <unk> variant, as raw train is not stored here), raw
# valid, raw test. The other tokenizers give counts within about 10% of these.
WIKITEXT2_BLOCKS = {"train": 37571, "valid": 3922, "test": 4494}
ARTICLE_TOKENS = 143  # tokens of one of rehearse_paper's WikiText-like articles under a 512-token BPE (measured)
TIMED_BATCHES = 3  # each throughput is timed over at least this many batches


class Shape(NamedTuple):
    """A hub model's shape, built with random weights and saved in the dtype the hub stores it in."""

    name: str
    model: ModelConfig
    vocab: int
    dtype: torch.dtype


FULL = {
    "opt-125m": Shape("opt-125m", ModelConfig(arch="opt", layers=12, width=768, heads=12, context=2048), 50272,
                      torch.float16),
    "pythia-410m": Shape("pythia-410m", ModelConfig(arch="gpt_neox", layers=24, width=1024, heads=16,
                                                    context=2048), 50304, torch.float16),
    "smollm2-1.7b": Shape("smollm2-1.7b", ModelConfig(arch="llama", layers=24, width=2048, heads=32,
                                                      context=2048), 49152, torch.bfloat16),
}
TINY = {k: Shape(s.name + "-tiny", ModelConfig(arch=s.model.arch, layers=2, width=64, heads=2, context=160), 512,
                 s.dtype) for k, s in FULL.items()}


class Sizes(NamedTuple):
    """How much each measurement does: the GPU mode, or --tiny."""

    tokens: int  # block = prompt = new tokens (the paper: 64)
    train_blocks: int  # micro-benchmark training set
    paper_batch: int  # generation.batch_size of the paper config
    largest_cap: int  # the largest batch tried
    eval_blocks: int
    protocol_blocks: dict[str, int]  # training blocks of the one-generation protocol run, per config
    protocol_eval_blocks: int
    protocol_overrides: list[str]


GPU_SIZES = Sizes(tokens=64, train_blocks=128 * 40, paper_batch=256, largest_cap=4096, eval_blocks=2048,
                  protocol_blocks={"shumailov2024-opt125m-keep10": 2000, "model-size-pythia-wikitext2": 1000,
                                   "lora-smollm2-1.7b-wikitext2": 600},
                  protocol_eval_blocks=max(WIKITEXT2_BLOCKS["valid"], WIKITEXT2_BLOCKS["test"]),
                  protocol_overrides=[])
# Toy sizes, 16-token blocks: on a CPU the first pass at each new sequence length costs seconds.
TINY_SIZES = Sizes(tokens=16, train_blocks=32, paper_batch=8, largest_cap=32, eval_blocks=32,
                   protocol_blocks={"shumailov2024-opt125m-keep10": 16, "model-size-pythia-wikitext2": 16,
                                    "lora-smollm2-1.7b-wikitext2": 16},
                   protocol_eval_blocks=8,
                   protocol_overrides=["eval.num_samples=4", "generation.batch_size=8", "eval.batch_size=8",
                                       "train.batch_size=8", "eval.tail_rank=50", "data.block_size=16",
                                       "generation.prompt_tokens=16", "generation.max_new_tokens=16",
                                       "generation.min_new_tokens=16", "eval.prompt_tokens=16",
                                       "eval.max_new_tokens=16"])
# The shipped configs measured, with the setting `testbed run` takes (sweep settings are the sweep's), the
# model shape (the config's largest), and the shipped configs projected from that measurement (the two
# Shumailov configs differ in mixing and epochs only).
PROTOCOLS = [
    ("shumailov2024-opt125m-keep10", "opt-125m", [],
     ["shumailov2024-opt125m-keep10", "shumailov2024-opt125m-replace"]),
    ("model-size-pythia-wikitext2", "pythia-410m", ["mixing.strategy=fixed_fraction", "mixing.human_fraction=0.1"],
     ["model-size-pythia-wikitext2"]),
    ("lora-smollm2-1.7b-wikitext2", "smollm2-1.7b", [], ["lora-smollm2-1.7b-wikitext2"]),
]


class Vocabulary:
    """What build_model needs of a tokenizer, for models that never see text."""

    bos_token_id = eos_token_id = 2
    pad_token_id = 1

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _release(device: torch.device) -> None:
    """Give freed GPU memory back (between measurements, so each one's reserved peak is its own)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def _memory(device: torch.device) -> dict[str, float | None]:
    """Peak GPU memory (GiB) since the last reset: allocated by tensors, and reserved by PyTorch's allocator
    (what the device must hold). None on a CPU."""
    if device.type != "cuda":
        return {"peak_gb": None, "reserved_gb": None}
    return {"peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "reserved_gb": torch.cuda.max_memory_reserved() / 2**30}


def measured(device: torch.device, warm: Callable[[], object], fn: Callable[[], object]) -> tuple[Any, float, dict]:
    """fn()'s result, its wall seconds and peak memory, after warm() (the same work at full size: kernels
    chosen and compiled, the allocator's cache filled as the timed work needs it)."""
    _release(device)
    warm()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t, _memory(device)


def free_bytes(device: torch.device) -> int | None:
    """GPU memory a new allocation can get: free on the device plus cached by PyTorch; None on a CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def build(shape: Shape, device: torch.device, seed: int = 0) -> torch.nn.Module:
    from testbed.model import build_model

    with torch.device(device):
        return build_model(shape.model, Vocabulary(shape.vocab), seed, vocab_size=shape.vocab).eval()


class Check:
    """The result so far, written (JSON, and the table beside it) after every stage, each stage run so that
    its failure is recorded and the next one runs: one attempt on a lent machine keeps what it measured."""

    def __init__(self, out: Path, result: dict):
        self.out, self.result, self.t0 = out, result, time.perf_counter()

    def write(self) -> None:
        self.result["seconds"] = time.perf_counter() - self.t0
        rundir.write_json(self.out, self.result)
        rundir.write_text(self.out.with_suffix(".txt"), table(self.result) + "\n")

    def stage(self, label: str, into: dict, fn: Callable[[], dict]) -> None:
        """into.update(fn()), or into["error"] (and "traceback") if it raised; then write."""
        print(f"[{time.perf_counter() - self.t0:5.0f} s] {label}", flush=True)
        try:
            into.update(fn())
        except Exception as exc:
            into.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            print(f"{label} failed: {into['traceback']}", file=sys.stderr, flush=True)
        _release(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        self.write()


def measure_model(shape: Shape, sizes: Sizes, device: torch.device, check: Check, out: dict) -> None:
    """Into `out`, one stage each: training, generation, sampling and evaluation throughput of one model
    shape, with peak memory."""
    from accelerate import Accelerator
    from accelerate.utils.memory import should_reduce_batch_size

    from testbed.batching import fitted, reset
    from testbed.generate import generate
    from testbed.metrics.signals import next_token_stats
    from testbed.model import autocast
    from testbed.train import train

    rng = np.random.default_rng(0)
    t = sizes.tokens
    blocks = rng.integers(3, shape.vocab, size=(sizes.train_blocks, t))
    valid = blocks[: sizes.paper_batch]
    model = build(shape, device)
    out["parameters"] = sum(p.numel() for p in model.parameters())
    out["tokens"] = t
    accelerator = Accelerator(cpu=device.type == "cpu")

    def training() -> dict:
        result = {}
        for precision in ("fp32", "bf16"):
            cfg = TrainConfig(lr=2e-5, batch_size=128 if sizes.paper_batch >= 128 else 8, select_best=False,
                              precision=precision)
            run, seconds, memory = measured(  # warm-up: two full batches and a validation pass on a fresh model
                device, lambda cfg=cfg: train(build(shape, device), human_examples(blocks[: cfg.batch_size * 2]),
                                              valid, cfg, t, accelerator, 0, 1),
                lambda cfg=cfg: train(build(shape, device), human_examples(blocks), valid, cfg, t, accelerator, 0, 1))
            result[precision] = {"tokens_per_s": run.tokens / (run.seconds - run.val_seconds),
                                 "validation_s": run.val_seconds, **memory, "batch": cfg.batch_size}
        return result

    def generation(g: GenerationConfig, precision: str, batch: int) -> dict:
        """Tokens/s of TIMED_BATCHES batches, after one: testbed halves a batch that does not fit, and the
        batch that ran is recorded."""
        reset()
        prompts = np.resize(blocks, (TIMED_BATCHES * batch, t))
        with autocast(precision, device):
            _, seconds, memory = measured(device, lambda: generate(model, prompts[:batch], g, t, batch, seed=0, eos=2),
                                          lambda: generate(model, prompts, g, t, batch, seed=0, eos=2))
        return {"tokens_per_s": len(prompts) * t / seconds, **memory, "batch": fitted("generate", batch)}

    def evaluation() -> dict:
        result = {}
        for precision in ("fp32", "bf16"):
            b = sizes.paper_batch
            with autocast(precision, device):
                _, seconds, memory = measured(
                    device, lambda b=b: next_token_stats(model, blocks[:b], b, with_rank=True),
                    lambda b=b: next_token_stats(model, blocks[: sizes.eval_blocks], b, with_rank=True))
            result[precision] = {"tokens_per_s": sizes.eval_blocks * t / seconds, **memory, "batch": b}
        return result

    beam = GenerationConfig(do_sample=False, num_beams=5, prompt_tokens=t, max_new_tokens=t, min_new_tokens=t)
    sampling = GenerationConfig(do_sample=True, top_p=0.9, prompt_tokens=t, max_new_tokens=t, min_new_tokens=t)

    def largest() -> dict:
        """The largest beam-5 batch that fits (bf16), doubling from the paper's: each tried with one batch,
        skipped where its KV cache alone exceeds the free memory, ended by an out-of-memory error (caught
        here: testbed's own retry would halve the batch instead); the largest then timed as the others."""
        fits, batch, skipped = sizes.paper_batch, sizes.paper_batch * 2, None
        while batch <= sizes.largest_cap:
            need, free = kv_cache_bytes(model.config, batch * beam.num_beams, 2 * t, 2), free_bytes(device)
            if free is not None and need > free:
                skipped = {"batch": batch, "kv_cache_gb": need / 2**30, "free_gb": free / 2**30}
                break
            reset()
            try:
                with autocast("bf16", device):
                    generate(model, np.resize(blocks, (batch, t)), beam, t, batch, seed=0, eos=2)
            except Exception as exc:  # not even one row fit
                if not (isinstance(exc, torch.OutOfMemoryError) or should_reduce_batch_size(exc)):
                    raise
                break
            finally:
                _release(device)
            if fitted("generate", batch) < batch:  # testbed ran it in halves: this batch does not fit
                break
            fits, batch = batch, batch * 2
        return {**generation(beam, "bf16", fits), "skipped": skipped}

    for key, fn in (("train", training),
                    ("beam5", lambda: {p: generation(beam, p, sizes.paper_batch) for p in ("fp32", "bf16")}),
                    ("sampling", lambda: {p: generation(sampling, p, sizes.paper_batch) for p in ("fp32", "bf16")}),
                    ("evaluation", evaluation), ("beam5_largest", largest)):
        check.stage(key, out.setdefault(key, {}), fn)


def write_corpus(out: Path, train_blocks: int, eval_blocks: int) -> Path:
    """WikiText-like raw lines: a training split of about `train_blocks` 64-token blocks (a few too many; the
    run caps them), valid and test of about `eval_blocks` each. Lines of ~50 tokens (under a BPE of the
    corpus' few words, one token a word)."""
    out.mkdir(parents=True, exist_ok=True)
    for seed, (split, blocks) in enumerate((("train", train_blocks), ("valid", eval_blocks), ("test", eval_blocks))):
        lines = rehearse_paper.wikitext_like_lines(max(4, math.ceil(blocks * 64 / ARTICLE_TOKENS * 1.2)), seed=seed)
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def save_checkpoint(shape: Shape, out: Path, tokenizer, device: torch.device) -> float:
    """A random-weight checkpoint shaped like the hub's, in its storage dtype, the tokenizer beside it, at
    `out`; returns the seconds of one save as a run saves each generation (fp32, `rundir.save_pretrained`)."""
    from testbed.model import build_model

    with torch.device(device):
        model = build_model(shape.model, tokenizer, 0, vocab_size=max(shape.vocab, len(tokenizer)))
    probe = out.with_name(out.name + "-save")
    t = time.perf_counter()
    rundir.save_pretrained(probe, model, tokenizer)
    seconds = time.perf_counter() - t
    shutil.rmtree(probe)
    model.to(shape.dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return seconds


def run_count(cfg: config.Config) -> int:
    """The runs `testbed sweep` makes of the config: its settings x its grid."""
    from testbed.sweep.grid import expand

    return len(expand(cfg, {}))


def run_protocol(name: str, shape: Shape, extra: list[str], sizes: Sizes, work: Path, device: torch.device) -> dict:
    """One generation of a shipped config on a local random checkpoint: per-stage times (its files deleted
    once they are read)."""
    from testbed.cli import main

    blocks = sizes.protocol_blocks[name]
    try:
        data = write_corpus(work / "data", blocks, sizes.protocol_eval_blocks)
        lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
        tokenizer = rehearse_paper.opt_like_tokenizer(None, lines, vocab_size=512)
        checkpoint = work / shape.name
        save_s = save_checkpoint(shape, checkpoint, tokenizer, device)
        args = ["run", str(REPO / "configs" / f"{name}.yaml"), f"model.name_or_path={checkpoint}",
                f"data.path={data}", "run.generations=1", f"data.max_train_blocks={blocks}",
                f"data.max_eval_blocks={sizes.protocol_eval_blocks}", "train.epochs=1", "train.gen0_epochs=1",
                "run.keep_checkpoints=last", f"run.out_dir={work / 'runs'}", f"run.name={name}", *extra,
                *sizes.protocol_overrides]
        if device.type == "cpu":
            args.append("train.precision=fp32")  # bf16 autocast on a CPU measures nothing a GPU run would do
        t = time.perf_counter()
        if main(args) != 0:
            raise RuntimeError(f"testbed {' '.join(args)} failed")
        total = time.perf_counter() - t
        run = work / "runs" / name
        timing = [json.loads((run / f"gen_{g:03d}" / "timing.json").read_text()) for g in (0, 1)]
        rows = rundir.read_jsonl(run / "metrics.jsonl")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"gen0": timing[0]["seconds"], "gen1": timing[1]["seconds"],
            "validation_s": [x["train_validation_s"] for x in timing], "save_s": save_s, "total_s": total,
            "train_blocks": rows[0]["train_composition"]["human"], "batch_sizes": timing[1]["batch_sizes"],
            "train_tokens_per_s": timing[1]["train_tokens_per_s"]}


def project(measured: dict, cfg: config.Config, runs: int) -> dict:
    """Wall time of a full protocol from one measured generation (generations 0 and 1, one epoch each).
    Generation, scoring, curation with mixing, and training steps grow with the training set: scaled by
    WikiText-2's training blocks over the measured ones, training also by the config's epochs. Validation
    (once an epoch, on WikiText-2's full valid split already) scales by epochs only; evaluation is counted as
    measured, a checkpoint save once per generation, and the rest of the measured run (loading, tokenizing)
    once."""
    scale = WIKITEXT2_BLOCKS["train"] / measured["train_blocks"]
    g0, g1 = measured["gen0"], measured["gen1"]
    v0, v1 = measured["validation_s"]
    save = measured["save_s"]
    gen0_epochs = cfg.train.gen0_epochs or cfg.train.epochs
    overhead = max(0.0, measured["total_s"] - sum(g0.values()) - sum(g1.values()) - 2 * save)
    gen0 = ((g0["train"] - v0) * scale + v0) * gen0_epochs + g0["evaluate"]
    later = (g1["generate"] + g1["score"] + g1.get("curate_mix", 0.0)) * scale \
        + ((g1["train"] - v1) * scale + v1) * cfg.train.epochs + g1["evaluate"]
    generations = cfg.run.generations
    run_s = gen0 + generations * later + (generations + 1) * save + overhead
    # A Slurm array with a GPU per run runs them all at once: the wall time is one run's.
    return {"run_hours": run_s / 3600, "runs": runs, "serial_hours": runs * run_s / 3600, "array_hours": run_s / 3600,
            "per_generation_s": later, "gen0_s": gen0, "saves_s": (generations + 1) * save, "overhead_s": overhead,
            "scale": scale}


def protocol(name: str, shape: Shape, extra: list[str], projected: list[str], sizes: Sizes, work: Path,
             device: torch.device) -> dict:
    """The measured generation and the projection of each config it stands for."""
    m = run_protocol(name, shape, extra, sizes, work, device)
    configs = {p: config.load(REPO / "configs" / f"{p}.yaml", extra) for p in projected}
    return {"measured": m, "projected": {p: project(m, cfg, run_count(cfg)) for p, cfg in configs.items()}}


def table(result: dict) -> str:
    """The printed summary of what has been measured so far (a failed stage: its error)."""
    lines = [f"device: {result['device']}   mode: {result['mode']}   torch {result['torch']}   "
             f"took {result.get('seconds', 0):.0f} s", ""]
    m = result["model"]
    if "parameters" in m:
        lines.append(f"{m['name']} ({m['parameters'] / 1e6:.1f}M parameters, random weights)")
    lines.append(f"{'stage':<30}{'fp32 tok/s':>12}{'bf16 tok/s':>12}{'batch':>7}"
                 f"{'GiB fp32/bf16 (reserved)':>34}")

    def gb(x: dict) -> str:
        return "-" if x["peak_gb"] is None else f"{x['peak_gb']:.1f} ({x['reserved_gb']:.1f})"

    def failed(label: str, entry: dict) -> str:
        return f"{label:<30}failed: {entry['error'].splitlines()[0][:100]}"

    beam = f"beam-5 generation {m.get('tokens', '')}->{m.get('tokens', '')}"
    for key, label in (("train", "train (validation apart)"), ("beam5", beam), ("sampling", "sampling (top-p)"),
                       ("evaluation", "evaluation")):
        if not m.get(key):
            continue
        if "error" in m[key]:
            lines.append(failed(label, m[key]))
            continue
        a, b = m[key]["fp32"], m[key]["bf16"]
        lines.append(f"{label:<30}{a['tokens_per_s']:>12,.0f}{b['tokens_per_s']:>12,.0f}{a['batch']:>7}"
                     f"{gb(a) + ' / ' + gb(b):>34}")
    if m.get("beam5_largest"):
        big, label = m["beam5_largest"], "beam-5, largest batch (bf16)"
        if "error" in big:
            lines.append(failed(label, big))
        else:
            lines.append(f"{label:<30}{'':>12}{big['tokens_per_s']:>12,.0f}{big['batch']:>7}{gb(big):>34}")
            if big["skipped"]:
                s = big["skipped"]
                lines.append(f"  batch {s['batch']} not tried: its KV cache ({s['kv_cache_gb']:.1f} GiB) exceeds "
                             f"the free memory ({s['free_gb']:.1f} GiB)")
    lines += ["", f"{'config (measured on: one generation)':<58}{'gen1 stages (s)':<38}{'run h':>7}{'runs':>6}"
                  f"{'serial h':>10}{'array h':>9}"]
    for p in result["protocols"]:
        if "error" in p:
            lines.append(failed(f"{p['config']} ({p['model']})", p))
        if "projected" not in p:
            continue
        stages = " ".join(f"{k[:3]} {v:.1f}" for k, v in p["measured"]["gen1"].items())
        for name, j in p["projected"].items():
            lines.append(f"{name + ' (' + p['model'] + ')':<58}{stages:<38}{j['run_hours']:>7.2f}{j['runs']:>6}"
                         f"{j['serial_hours']:>10.1f}{j['array_hours']:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="the JSON written, and the table beside it as .txt "
                   "(default: gpu_check.json)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny: the CI rehearsal)")
    p.add_argument("--tiny", action="store_true", help="toy sizes: checks the code path, measures nothing real")
    p.add_argument("--work", help="where checkpoints, corpora and runs go (default: a temporary directory)")
    a = p.parse_args(argv)
    if not a.cpu and not torch.cuda.is_available():
        p.error("no GPU visible: pass --cpu (with --tiny for the quick rehearsal)")
    device = torch.device("cpu" if a.cpu else "cuda")
    if device.type == "cpu":
        from testbed.model import reproducible_cpu

        reproducible_cpu(None)
    shapes, sizes = (TINY, TINY_SIZES) if a.tiny else (FULL, GPU_SIZES)
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "mode": "tiny" if a.tiny else "full", "torch": torch.__version__,
                    "model": {"name": shapes["opt-125m"].name}, "protocols": []}
    out = Path(a.out)
    check = Check(out, result)
    check.stage("model", result["model"],
                lambda: measure_model(shapes["opt-125m"], sizes, device, check, result["model"]) or {})
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        for name, shape, extra, projected in PROTOCOLS:
            entry = {"config": name, "model": shapes[shape].name}
            result["protocols"].append(entry)
            check.stage(name, entry, partial(protocol, name, shapes[shape], extra, projected, sizes,
                                             Path(tmp) / name, device))
    print(table(result))
    print(f"\nwrote {out} and {out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
