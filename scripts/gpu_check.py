"""Measure, in one command, what a GPU does with testbed, and project the wall time of the shipped protocols.

    python scripts/gpu_check.py [--out gpu_check.json]   # one GPU, offline: planned ~6 min on an H200, untimed
    python scripts/gpu_check.py --cpu --tiny             # the same code at toy sizes: 1-2.5 min on a 2-core CPU

1. On an OPT-125m-shaped model (random weights: the timing does not depend on them), through testbed's own
   functions: training tokens/s in fp32 and bf16 (`testbed.train.train`); beam-5 64->64 generation
   tokens/s at the paper's batch in both precisions and the largest batch that fits in bf16
   (`testbed.generate.generate`); sampling tokens/s (top-p, one beam); evaluation tokens/s
   (`next_token_stats` on human-shaped blocks, as each generation's evaluation does); the peak GPU memory of
   each stage.
2. One generation (models 0 and 1) of each shipped GPU protocol, run by `testbed run` on a random-weight
   checkpoint of its largest model saved like the hub's (OPT-125m fp16, Pythia-410m fp16, SmolLM2-1.7B bf16
   with LoRA) and a WikiText-like corpus of a few thousand training blocks (valid and test splits at
   WikiText-2's size): per-stage times from the run's timing.json.
3. From these, the projected wall time of the full protocol: models 0..9, 5 seeds, each config's settings
   (the paper: replace and keep-10%), serially on this GPU and as a Slurm array with a GPU per run. Stage
   times are scaled by WikiText-2's training blocks over the measured ones and by the config's epochs;
   evaluation and per-run overheads are counted as measured. An estimate, not a measurement.

Writes one JSON (--out) and prints a table. Nothing is downloaded: the machine may have no network.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rehearse_paper  # noqa: E402

from testbed.config import GenerationConfig, ModelConfig, TrainConfig  # noqa: E402
from testbed.mixing import human_examples  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# WikiText-2 in 64-token blocks under GPT-2's BPE with the paper's preprocessing (each raw line tokenized with
# OPT's BOS), counted from ../shared/data: train (the <unk> variant, as raw train is not stored here), raw
# valid, raw test. The other tokenizers give counts within about 10% of these.
WIKITEXT2_BLOCKS = {"train": 37571, "valid": 3922, "test": 4494}
SEEDS = 5
ARTICLE_TOKENS = 143  # tokens of one of rehearse_paper's WikiText-like articles under a 512-token BPE (measured)


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
    prompts: int  # prompts per generation measurement (a few batches)
    largest_cap: int  # the largest batch tried
    eval_blocks: int
    protocol_blocks: dict[str, int]  # training blocks of the one-generation protocol run, per config
    protocol_eval_blocks: int
    protocol_overrides: list[str]


GPU_SIZES = Sizes(tokens=64, train_blocks=128 * 40, paper_batch=256, prompts=512, largest_cap=4096, eval_blocks=2048,
                  protocol_blocks={"shumailov2024-opt125m-keep10": 2000, "model-size-pythia-wikitext2": 1000,
                                   "lora-smollm2-1.7b-wikitext2": 600},
                  protocol_eval_blocks=max(WIKITEXT2_BLOCKS["valid"], WIKITEXT2_BLOCKS["test"]),
                  protocol_overrides=[])
# Toy sizes, 16-token blocks: on a CPU the first pass at each new sequence length costs seconds.
TINY_SIZES = Sizes(tokens=16, train_blocks=32, paper_batch=8, prompts=16, largest_cap=32, eval_blocks=32,
                   protocol_blocks={"shumailov2024-opt125m-keep10": 16, "model-size-pythia-wikitext2": 16,
                                    "lora-smollm2-1.7b-wikitext2": 16},
                   protocol_eval_blocks=8,
                   protocol_overrides=["eval.num_samples=4", "generation.batch_size=8", "eval.batch_size=8",
                                       "train.batch_size=8", "eval.tail_rank=50", "data.block_size=16",
                                       "generation.prompt_tokens=16", "generation.max_new_tokens=16",
                                       "generation.min_new_tokens=16", "eval.prompt_tokens=16",
                                       "eval.max_new_tokens=16"])
# The shipped configs measured, with the setting `testbed run` takes (sweep settings are the sweep's), the
# model shape, and the number of settings the full protocol runs (each for SEEDS seeds).
PROTOCOLS = [
    ("shumailov2024-opt125m-keep10", "opt-125m", [], 2),  # replace and keep-10%: the same stages and sizes
    ("model-size-pythia-wikitext2", "pythia-410m", ["mixing.strategy=fixed_fraction", "mixing.human_fraction=0.1"],
     2),
    ("lora-smollm2-1.7b-wikitext2", "smollm2-1.7b", [], 1),
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


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def timed(device: torch.device, fn) -> tuple[object, float, float | None]:
    """fn()'s result, its wall seconds and the peak GPU memory (GiB; None on a CPU) while it ran."""
    _reset_peak(device)
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t, _peak_gb(device)


def build(shape: Shape, device: torch.device, seed: int = 0) -> torch.nn.Module:
    from testbed.model import build_model

    with torch.device(device):
        return build_model(shape.model, Vocabulary(shape.vocab), seed, vocab_size=shape.vocab).eval()


def measure_model(shape: Shape, sizes: Sizes, device: torch.device) -> dict:
    """Training, generation, sampling and evaluation throughput of one model shape, with peak memory."""
    from accelerate import Accelerator

    from testbed.batching import fitted, reset
    from testbed.generate import generate
    from testbed.metrics import next_token_stats
    from testbed.model import autocast
    from testbed.train import train

    rng = np.random.default_rng(0)
    t = sizes.tokens
    blocks = rng.integers(3, shape.vocab, size=(sizes.train_blocks, t))
    valid = blocks[: sizes.paper_batch]
    prompts = blocks[: sizes.prompts]
    out: dict = {"parameters": None, "tokens": t, "train": {}, "beam5": {}, "sampling": {}, "evaluation": {}}
    model = build(shape, device)
    out["parameters"] = sum(p.numel() for p in model.parameters())
    accelerator = Accelerator(cpu=device.type == "cpu")

    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(lr=2e-5, batch_size=128 if sizes.paper_batch >= 128 else 8, select_best=False,
                          precision=precision)
        warm = build(shape, device)
        train(warm, human_examples(blocks[: cfg.batch_size * 2]), valid[:8], cfg, t, accelerator, 0, 1)
        del warm
        trained = build(shape, device)
        result, seconds, peak = timed(device, lambda cfg=cfg, m=trained: train(
            m, human_examples(blocks), valid, cfg, t, accelerator, 0, 1))
        out["train"][precision] = {"tokens_per_s": result.tokens / result.seconds, "peak_gb": peak,
                                   "batch": cfg.batch_size}
        del trained

    def generation(g: GenerationConfig, precision: str, batch: int, n: int) -> dict:
        """Tokens/s of `n` prompts at `batch`, and the batch that ran: testbed halves one that does not fit."""
        reset()
        with autocast(precision, device):
            generate(model, prompts[:2], g, 4, 2, seed=0, eos=2)  # warm up
            _, seconds, peak = timed(device, lambda: generate(model, np.resize(prompts, (n, t)), g, t, batch,
                                                              seed=0, eos=2))
        return {"tokens_per_s": n * t / seconds, "peak_gb": peak, "batch": fitted("generate", batch)}

    beam = GenerationConfig(do_sample=False, num_beams=5, prompt_tokens=t, max_new_tokens=t, min_new_tokens=t)
    sampling = GenerationConfig(do_sample=True, top_p=0.9, prompt_tokens=t, max_new_tokens=t, min_new_tokens=t)
    for precision in ("fp32", "bf16"):
        out["beam5"][precision] = generation(beam, precision, sizes.paper_batch, sizes.prompts)
        out["sampling"][precision] = generation(sampling, precision, sizes.paper_batch, sizes.prompts)
        with autocast(precision, device):
            _, seconds, peak = timed(device, lambda: next_token_stats(model, blocks[: sizes.eval_blocks],
                                                                      sizes.paper_batch, with_rank=True))
        out["evaluation"][precision] = {"tokens_per_s": sizes.eval_blocks * t / seconds, "peak_gb": peak,
                                        "batch": sizes.paper_batch}

    # The largest beam-5 batch that fits (bf16), doubling from the paper's: one batch each, an out-of-memory
    # error ends the search (caught here: testbed's own retry would halve the batch instead).
    from accelerate.utils.memory import should_reduce_batch_size

    largest, batch = out["beam5"]["bf16"], sizes.paper_batch * 2
    while batch <= sizes.largest_cap:
        try:
            measured = generation(beam, "bf16", batch, batch)
        except Exception as exc:  # not even one row fit
            if not (isinstance(exc, torch.OutOfMemoryError) or should_reduce_batch_size(exc)):
                raise
            break
        finally:
            reset()
        if measured["batch"] < batch:  # testbed ran it in halves: this batch does not fit
            break
        largest, batch = measured, batch * 2
    out["beam5_largest"] = largest
    return out


def write_corpus(out: Path, train_blocks: int, eval_blocks: int) -> Path:
    """WikiText-like raw lines: a training split of about `train_blocks` 64-token blocks (a few too many; the
    run caps them), valid and test of about `eval_blocks` each. Lines of ~50 tokens (under a BPE of the
    corpus' few words, one token a word)."""
    out.mkdir(parents=True, exist_ok=True)
    for seed, (split, blocks) in enumerate((("train", train_blocks), ("valid", eval_blocks), ("test", eval_blocks))):
        lines = rehearse_paper.wikitext_like_lines(max(4, math.ceil(blocks * 64 / ARTICLE_TOKENS * 1.2)), seed=seed)
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def save_checkpoint(shape: Shape, out: Path, tokenizer, device: torch.device) -> Path:
    """A random-weight checkpoint shaped like the hub's, in its storage dtype, the tokenizer beside it."""
    from testbed.model import build_model

    with torch.device(device):
        model = build_model(shape.model, tokenizer, 0, vocab_size=max(shape.vocab, len(tokenizer)))
    model.to(shape.dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    return out


def run_protocol(name: str, shape: Shape, extra: list[str], settings: int, sizes: Sizes, work: Path,
                 device: torch.device) -> dict:
    """One generation of a shipped config on a local random checkpoint: per-stage times, then the projection."""
    from testbed import config
    from testbed.cli import main

    path = REPO / "configs" / f"{name}.yaml"
    blocks = sizes.protocol_blocks[name]
    data = write_corpus(work / f"{name}-data", blocks, sizes.protocol_eval_blocks)
    lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = rehearse_paper.opt_like_tokenizer(None, lines, vocab_size=512)
    checkpoint = save_checkpoint(shape, work / shape.name, tokenizer, device)
    args = ["run", str(path), f"model.name_or_path={checkpoint}", f"data.path={data}", "run.generations=1",
            f"data.max_train_blocks={blocks}", f"data.max_eval_blocks={sizes.protocol_eval_blocks}",
            "train.epochs=1", "train.gen0_epochs=1", "run.keep_checkpoints=last", f"run.out_dir={work / 'runs'}",
            f"run.name={name}", *extra, *sizes.protocol_overrides]
    if device.type == "cpu":
        args.append("train.precision=fp32")  # bf16 autocast on a CPU measures nothing a GPU run would do
    t = time.perf_counter()
    if main(args) != 0:
        raise RuntimeError(f"testbed {' '.join(args)} failed")
    total = time.perf_counter() - t
    run = work / "runs" / name
    timing = [json.loads((run / f"gen_{g:03d}" / "timing.json").read_text()) for g in (0, 1)]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    cfg = config.load(path, extra)  # the shipped protocol: its generations and epochs
    trained = rows[0]["train_composition"]["human"]
    measured = {"gen0": timing[0]["seconds"], "gen1": timing[1]["seconds"], "total_s": total,
                "train_blocks": trained, "batch_sizes": timing[1]["batch_sizes"],
                "train_tokens_per_s": timing[1]["train_tokens_per_s"]}
    return {"config": name, "model": shape.name, "measured": measured,
            "projected": project(measured, cfg, settings)}


def project(measured: dict, cfg, settings: int) -> dict:
    """Wall time of the full protocol from one measured generation: stages that grow with the training set
    scaled by WikiText-2's blocks over the measured ones, training by the config's epochs; evaluation and the
    run's overhead (loading, tokenizing, saving) as measured."""
    scale = WIKITEXT2_BLOCKS["train"] / measured["train_blocks"]
    g0, g1 = measured["gen0"], measured["gen1"]
    gen0_epochs = cfg.train.gen0_epochs or cfg.train.epochs
    stages = sum(g0.values()) + sum(g1.values())
    overhead = max(0.0, measured["total_s"] - stages)
    gen0 = g0["train"] * scale * gen0_epochs + g0["evaluate"]
    later = (g1["generate"] + g1["score"]) * scale + g1["train"] * scale * cfg.train.epochs + g1["evaluate"]
    run_s = gen0 + cfg.run.generations * later + overhead
    runs = settings * SEEDS
    # A Slurm array with a GPU per run runs them all at once: the wall time is one run's.
    return {"run_hours": run_s / 3600, "runs": runs, "serial_hours": runs * run_s / 3600,
            "array_hours": run_s / 3600, "per_generation_s": later, "gen0_s": gen0, "scale": scale}


def table(result: dict) -> str:
    """The printed summary."""
    lines = [f"device: {result['device']}   mode: {result['mode']}   took {result['seconds']:.0f} s", ""]
    m = result["model"]
    lines.append(f"{m['name']} ({m['parameters'] / 1e6:.1f}M parameters, random weights)")
    lines.append(f"{'stage':<28}{'fp32 tok/s':>12}{'bf16 tok/s':>12}{'batch':>8}{'peak GiB fp32/bf16':>22}")

    def gb(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    beam = f"beam-5 generation {m['tokens']}->{m['tokens']}"
    for key, label in (("train", "train"), ("beam5", beam), ("sampling", "sampling (top-p)"),
                       ("evaluation", "evaluation")):
        a, b = m[key]["fp32"], m[key]["bf16"]
        lines.append(f"{label:<28}{a['tokens_per_s']:>12,.0f}{b['tokens_per_s']:>12,.0f}{a['batch']:>8}"
                     f"{gb(a['peak_gb']) + ' / ' + gb(b['peak_gb']):>22}")
    big = m["beam5_largest"]
    lines.append(f"{'beam-5, largest batch (bf16)':<28}{'':>12}{big['tokens_per_s']:>12,.0f}{big['batch']:>8}"
                 f"{gb(big['peak_gb']):>22}")
    lines += ["", f"{'protocol (one generation measured)':<48}{'gen1 stages (s)':<40}{'run h':>7}{'runs':>6}"
                  f"{'serial h':>10}{'array h':>9}"]
    for p in result["protocols"]:
        stages = " ".join(f"{k[:3]} {v:.1f}" for k, v in p["measured"]["gen1"].items())
        j = p["projected"]
        lines.append(f"{p['config'] + ' (' + p['model'] + ')':<48}{stages:<40}{j['run_hours']:>7.2f}{j['runs']:>6}"
                     f"{j['serial_hours']:>10.1f}{j['array_hours']:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (default: gpu_check.json)")
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
    t0 = time.perf_counter()
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "mode": "tiny" if a.tiny else "full", "torch": torch.__version__}
    result["model"] = {"name": shapes["opt-125m"].name, **measure_model(shapes["opt-125m"], sizes, device)}
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        result["protocols"] = [run_protocol(name, shapes[shape], extra, settings, sizes, Path(tmp), device)
                               for name, shape, extra, settings in PROTOCOLS]
    result["seconds"] = time.perf_counter() - t0
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
