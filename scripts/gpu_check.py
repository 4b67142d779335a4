"""Measure, in one command, the rates at which a GPU runs testbed's stages: what `testbed plan --gpu-check`
projects any config's time from.

    bash scripts/gpu_launch.sh [--out gpu_check.json]    # on a GPU machine without network (wheels copied)
    python scripts/gpu_check.py [--out gpu_check.json]   # one GPU, testbed and its dependencies installed
    python scripts/gpu_check.py --cpu --tiny             # the same code at toy sizes on a CPU

1. Rates, in tokens/s, of every model shape the shipped GPU configs run (CONFIGS; the shapes of
   testbed/model_shapes with random weights: the timing does not depend on them), at each precision, batch,
   training method and decoding their runs use (`testbed.sweep.plan.needs`), through testbed's own
   functions: training (`testbed.train.train`; tokens trained, validation timed apart), generation
   (`testbed.generate.generate`; new tokens x beams, after prompts as long), and the forward passes of
   validation, scoring and evaluation (`next_token_stats`). OPT-125m also under bf16, and its beam-5
   generation at the largest batch that fits (doubling; a batch whose KV cache cannot fit the free GPU
   memory is not tried). Each is warmed up by the same work at full size, then timed over at least 3
   batches (training and forward passes: about the work of 20 batches of OPT-125m), with its peak GPU memory.
2. One generation (models 0 and 1) of each shipped GPU protocol (PROTOCOLS), run by `testbed run` on a
   random-weight checkpoint of its largest model saved like the hub's and a WikiText-like corpus: its
   per-stage times (timing.json) against the rates' projection of the same run
   (`testbed.sweep.plan.stage_seconds`), which give the start-up and the per-generation CPU work (curation,
   metrics, writing) the rates leave out, and the speed of a checkpoint save. Its files are deleted once read.

Writes one JSON (--out) and its table (the same name, .txt) after every stage, atomically: a stage that fails
is recorded (its error in the JSON) and the next one runs. Nothing is downloaded: the machine may have no
network.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from testbed.config import ModelConfig  # noqa: E402
from testbed.sweep import plan  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FORMAT = 2  # the JSON's layout: rates per shape (testbed plan refuses older ones)
ARTICLE_TOKENS = 143  # tokens of one of rehearse_paper's WikiText-like articles under a 512-token BPE (measured)
OPT = "facebook/opt-125m"
# The shipped GPU configs whose runs' rates are measured.
CONFIGS = ["shumailov2024-opt125m-keep10", "shumailov2024-opt125m-replace", "model-size-pythia-wikitext2",
           "lora-smollm2-1.7b-wikitext2"]
# Each measured end to end in one generation on its largest model, with the setting `testbed run` takes (a
# sweep's settings are the sweep's).
PROTOCOLS = [("shumailov2024-opt125m-keep10", OPT, []),
             ("model-size-pythia-wikitext2", "EleutherAI/pythia-410m",
              ["mixing.strategy=fixed_fraction", "mixing.human_fraction=0.1"]),
             ("lora-smollm2-1.7b-wikitext2", "HuggingFaceTB/SmolLM2-1.7B", [])]


class Sizes(NamedTuple):
    """How much each measurement does: the GPU mode, or --tiny."""

    tiny: bool
    timed: int  # each rate is timed over at least this many batches
    batches: int  # timed batches of a 125M-parameter model's training and forward passes (fewer for larger)
    batch_cap: int | None  # every batch at most this (tiny)
    sequence: int | None  # every sequence this long (tiny)
    largest_cap: int  # the largest generation batch tried
    protocol_blocks: dict[str, int]  # training blocks of the one-generation protocol run, per config
    protocol_eval_blocks: int
    protocol_overrides: list[str]

    def need(self, need: plan.Need) -> plan.Need:
        """The measurement of `need` at these sizes."""
        return need._replace(batch=min(need.batch, self.batch_cap or need.batch),
                             sequence=self.sequence or need.sequence)


GPU_SIZES = Sizes(tiny=False, timed=3, batches=20, batch_cap=None, sequence=None, largest_cap=4096,
                  protocol_blocks={"shumailov2024-opt125m-keep10": 2000, "model-size-pythia-wikitext2": 1000,
                                   "lora-smollm2-1.7b-wikitext2": 600},
                  protocol_eval_blocks=plan.WIKITEXT2_TOKENS["test"] // 64, protocol_overrides=[])
# Toy sizes, 16-token blocks: on a CPU the first pass at each new sequence length costs seconds.
TINY_SIZES = Sizes(tiny=True, timed=1, batches=2, batch_cap=8, sequence=16, largest_cap=32,
                   protocol_blocks={"shumailov2024-opt125m-keep10": 16, "model-size-pythia-wikitext2": 16,
                                    "lora-smollm2-1.7b-wikitext2": 16},
                   protocol_eval_blocks=8,
                   protocol_overrides=["eval.num_samples=4", "generation.batch_size=8", "eval.batch_size=8",
                                       "train.batch_size=8", "eval.tail_rank=50", "data.block_size=16",
                                       "generation.prompt_tokens=16", "generation.max_new_tokens=16",
                                       "generation.min_new_tokens=16", "eval.prompt_tokens=16",
                                       "eval.max_new_tokens=16"])


class Shape(NamedTuple):
    """A hub model's shape (its transformers config, or a 2-layer width-64 one of the same architecture at
    toy sizes) and the dtype the hub stores it in."""

    name: str
    config: Any
    dtype: torch.dtype


def shape(name: str, tiny: bool) -> Shape:
    from transformers import AutoConfig

    from testbed.model import arch_kwargs

    full = AutoConfig.from_pretrained(plan.shape_file(name))
    dtype = full.dtype if isinstance(full.dtype, torch.dtype) else getattr(torch, str(full.dtype))
    if not tiny:
        return Shape(name, full, dtype)
    small = ModelConfig(arch=full.model_type, layers=2, width=64, heads=2, context=160)
    return Shape(name, AutoConfig.for_model(full.model_type, vocab_size=512, **arch_kwargs(small)), dtype)


def build(s: Shape, device: torch.device, ids: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """The shape with random weights in fp32 (testbed's master weights), its special tokens `ids` (default:
    within any vocabulary)."""
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(s.config)
    cfg.update(ids or {"bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1})
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _release(device: torch.device) -> None:
    """Give freed GPU memory back (between measurements, so each one's reserved peak is its own)."""
    gc.collect()
    if device.type == "cuda":
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


class Check:
    """The result so far, written (JSON, and the table beside it) after every stage, each stage run so that
    its failure is recorded and the next one runs: one attempt on a GPU keeps what it measured."""

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


class Item(NamedTuple):
    """One rate to measure: the shape, the need (at the measurement's sizes), a run that needs it and the
    part of that run (its training, generation or evaluation settings are the ones measured)."""

    shape: str
    need: plan.Need
    cfg: config.Config
    part: str


def items(sizes: Sizes) -> list[Item]:
    """Every rate the runs of CONFIGS need, once each, grouped by shape; OPT-125m's also under bf16. At toy
    sizes the shapes of one architecture are one shape, measured once."""
    from testbed.sweep.validate import sweep_configs

    def add(item: Item) -> None:
        arch = json.loads(plan.shape_file(item.shape).read_text())["model_type"] if sizes.tiny else item.shape
        found.setdefault((arch, item.need), item)

    found: dict[tuple, Item] = {}
    for name in CONFIGS:
        for _, cfg in sweep_configs(str(REPO / "configs" / f"{name}.yaml"), []):
            for part, need in plan.needs(cfg).items():
                add(Item(cfg.model.name_or_path, sizes.need(need), cfg, part))
    for item in [i for i in found.values() if i.shape == OPT and i.need.precision == "fp32"]:
        cfg = copy.deepcopy(item.cfg)
        cfg.train.precision = "bf16"
        add(item._replace(need=item.need._replace(precision="bf16"), cfg=cfg))
    order = list(dict.fromkeys(i.shape for i in found.values()))
    return sorted(found.values(), key=lambda i: (order.index(i.shape), i.need.stage != "train"))


def _batches(sizes: Sizes, parameters: int) -> int:
    """Timed batches of training and forward passes: about the work of `sizes.batches` batches of a
    125M-parameter model, at least `sizes.timed` (toy sizes: `sizes.batches`)."""
    return sizes.batches if sizes.tiny else max(sizes.timed, round(sizes.batches * 125e6 / parameters))


def _decoding(item: Item):
    """The decoding of the measured part (generation's, or evaluation's), every sample `sequence` tokens."""
    from testbed.evaluation import eval_decoding

    d = item.cfg.generation if item.part == "generation" else eval_decoding(item.cfg)
    n = item.need.sequence
    return dataclasses.replace(d, prompt_tokens=n, max_new_tokens=n, min_new_tokens=n)


def parameters(s: Shape) -> int:
    """The shape's parameter count (built on the meta device: no memory)."""
    return sum(p.numel() for p in build(s, torch.device("meta")).parameters())


def measure(item: Item, s: Shape, model: torch.nn.Module | None, sizes: Sizes, device: torch.device,
            accelerator) -> dict:
    """One rate: tokens/s of the item's stage, with its peak memory. Training builds fresh models; the
    other stages run `model`."""
    from testbed.batching import fitted, reset
    from testbed.generate import generate
    from testbed.metrics.signals import next_token_stats
    from testbed.mixing import human_examples
    from testbed.model import autocast
    from testbed.train import train

    need = item.need
    n = _batches(sizes, parameters(s))
    blocks = np.random.default_rng(0).integers(3, s.config.vocab_size, size=(n * need.batch, need.sequence))
    if need.stage == "train":  # validation timed apart
        cfg = dataclasses.replace(item.cfg.train, select_best=False, eval_every=0, batch_size=need.batch)
        valid = blocks[: need.batch]
        run, _, memory = measured(
            device, lambda: train(build(s, device), human_examples(blocks[: 2 * need.batch]), valid, cfg,
                                  need.sequence, accelerator, 0, 1),
            lambda: train(build(s, device), human_examples(blocks), valid, cfg, need.sequence, accelerator, 0, 1))
        return {"tokens_per_s": run.tokens / (run.seconds - run.val_seconds), "validation_s": run.val_seconds,
                **memory}
    with autocast(need.precision, device):
        if need.stage == "forward":
            _, seconds, memory = measured(
                device, lambda: next_token_stats(model, blocks[: need.batch], need.batch, with_rank=True),
                lambda: next_token_stats(model, blocks, need.batch, with_rank=True))
            return {"tokens_per_s": blocks.size / seconds, **memory}
        # Generation: testbed halves a batch that does not fit; the batch that ran is recorded.
        reset()
        d, prompts = _decoding(item), np.resize(blocks, (sizes.timed * need.batch, need.sequence))
        _, seconds, memory = measured(
            device, lambda: generate(model, prompts[: need.batch], d, d.max_new_tokens, need.batch, seed=0, eos=2),
            lambda: generate(model, prompts, d, d.max_new_tokens, need.batch, seed=0, eos=2))
        return {"tokens_per_s": prompts.size * d.num_beams / seconds, "ran_batch": fitted("generate", need.batch),
                **memory}


def largest(item: Item, s: Shape, model: torch.nn.Module, sizes: Sizes, device: torch.device, accelerator) -> dict:
    """The rate of the item's generation (OPT-125m's beam search, bf16) at the largest batch that fits,
    doubling from its batch: each tried with one batch, skipped where its KV cache alone exceeds the free
    memory, ended by an out-of-memory error (caught here: testbed's own retry would halve the batch
    instead); the largest then timed as the others."""
    from accelerate.utils.memory import should_reduce_batch_size

    from testbed.batching import fitted, reset
    from testbed.generate import generate
    from testbed.model import autocast

    d, t = _decoding(item), item.need.sequence
    fits, batch, skipped = item.need.batch, item.need.batch * 2, None
    blocks = np.random.default_rng(0).integers(3, s.config.vocab_size, size=(sizes.largest_cap, t))
    while batch <= sizes.largest_cap:
        need, free = plan.kv_cache_bytes(model.config, batch * d.num_beams, 2 * t, 2), free_bytes(device)
        if free is not None and need > free:
            skipped = {"batch": batch, "kv_cache_gb": need / 2**30, "free_gb": free / 2**30}
            break
        reset()
        try:
            with autocast(item.need.precision, device):
                generate(model, blocks[:batch], d, t, batch, seed=0, eos=2)
        except Exception as exc:  # not even one row fit
            if not (isinstance(exc, torch.OutOfMemoryError) or should_reduce_batch_size(exc)):
                raise
            break
        finally:
            _release(device)
        if fitted("generate", batch) < batch:  # testbed ran it in halves: this batch does not fit
            break
        fits, batch = batch, batch * 2
    need = item.need._replace(batch=fits)
    return {"batch": fits, "skipped": skipped, **measure(item._replace(need=need), s, model, sizes, device,
                                                         accelerator)}


def measure_shape(name: str, its: list[Item], sizes: Sizes, device: torch.device, accelerator,
                  check: Check) -> None:
    """Each rate of one shape, a stage each, into the result's rates; OPT-125m's bf16 beam search also at
    the largest batch that fits."""
    s = shape(name, sizes.tiny)
    identity = {"shape": name, "model_type": s.config.model_type, "parameters": parameters(s)}
    model = None
    for item in its:
        if model is None and item.need.stage != "train":  # built after the training measurements
            model = build(s, device)
        entry = {**item.need._asdict(), **identity}
        check.result["rates"].append(entry)
        label = plan.Rate(**entry, tokens_per_s=0).describe()
        check.stage(f"{item.need.stage} {label}", entry, partial(measure, item, s, model, sizes, device, accelerator))
        if (name, item.part, item.need.precision, item.need.variant) == (OPT, "generation", "bf16", "beam"):
            entry = {**entry, "largest": True}
            check.result["rates"].append(entry)
            check.stage(f"{label}: the largest batch that fits", entry,
                        partial(largest, item, s, model, sizes, device, accelerator))


def write_corpus(out: Path, train_blocks: int, eval_blocks: int) -> Path:
    """WikiText-like raw lines: a training split of about `train_blocks` 64-token blocks (a few too many; the
    run caps them), valid and test of about `eval_blocks` each. Lines of ~50 tokens (under a BPE of the
    corpus' few words, one token a word)."""
    out.mkdir(parents=True, exist_ok=True)
    for seed, (split, blocks) in enumerate((("train", train_blocks), ("valid", eval_blocks), ("test", eval_blocks))):
        lines = rehearse_paper.wikitext_like_lines(max(4, math.ceil(blocks * 64 / ARTICLE_TOKENS * 1.2)), seed=seed)
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def save_checkpoint(s: Shape, out: Path, tokenizer, device: torch.device) -> float:
    """A random-weight checkpoint shaped like the hub's, in its storage dtype, the tokenizer beside it, at
    `out`; returns the seconds of one save as a run saves each generation (fp32, `rundir.save_pretrained`)."""
    from testbed.model import start_token

    ids = {"bos_token_id": start_token(tokenizer), "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    model = build(s, device, ids)
    probe = out.with_name(out.name + "-save")
    t = time.perf_counter()
    rundir.save_pretrained(probe, model, tokenizer)
    seconds = time.perf_counter() - t
    shutil.rmtree(probe)
    model.to(s.dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return seconds


def counts(cfg: config.Config) -> plan.Counts:
    """The blocks the run read, counted with its own tokenizer (the checkpoint's)."""
    from testbed.data import load_corpus, split_names, tokenize_corpus
    from testbed.model import load_tokenizer

    c = tokenize_corpus(load_corpus(cfg.data, cfg.run.seed), load_tokenizer(cfg, []), cfg.data, split_names(cfg.data))
    return plan.Counts(train=len(c.train), valid=len(c.valid), test=len(c.test), source="counted")


def protocol(name: str, shape_name: str, extra: list[str], sizes: Sizes, work: Path, device: torch.device,
             result: dict, out: Path) -> dict:
    """One generation of a shipped config on a local random checkpoint: per-stage times against the rates'
    projection of the same run, the start-up and per-generation CPU work that follow, and the save speed
    (its files deleted once they are read)."""
    from testbed.cli import main

    s = shape(shape_name, sizes.tiny)
    blocks = sizes.protocol_blocks[name]
    try:
        data = write_corpus(work / "data", blocks, sizes.protocol_eval_blocks)
        lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
        tokenizer = rehearse_paper.opt_like_tokenizer(None, lines, vocab_size=512)
        checkpoint = work / "model"
        save_s = save_checkpoint(s, checkpoint, tokenizer, device)
        overrides = [f"model.name_or_path={checkpoint}", f"data.path={data}", "run.generations=1",
                     f"data.max_train_blocks={blocks}",
                     f"data.max_eval_blocks={sizes.protocol_eval_blocks}", "train.epochs=1", "train.gen0_epochs=1",
                     "run.keep_checkpoints=last", f"run.out_dir={work / 'runs'}", f"run.name={name}", *extra,
                     *sizes.protocol_overrides]
        if device.type == "cpu":
            overrides.append("train.precision=fp32")  # bf16 autocast on a CPU measures nothing a GPU run would do
        path = REPO / "configs" / f"{name}.yaml"
        t = time.perf_counter()
        if main(["run", str(path), *overrides]) != 0:
            raise RuntimeError(f"testbed run {path} {' '.join(overrides)} failed")
        total = time.perf_counter() - t
        run = work / "runs" / name
        timing = [json.loads((run / f"gen_{g:03d}" / "timing.json").read_text()) for g in (0, 1)]
        cfg = config.load(path, overrides)
        counted = counts(cfg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = parameters(s)
    model = plan.Model(shape_name, s.config.model_type, n)
    identity = {"shape": shape_name, "model_type": s.config.model_type, "parameters": n}
    measured_ = {"gen0": timing[0]["seconds"], "gen1": timing[1]["seconds"], "total_s": total,
                 "validation_s": [x["train_validation_s"] for x in timing], "batch_sizes": timing[1]["batch_sizes"],
                 "train_blocks": counted.train, "valid_blocks": counted.valid, "test_blocks": counted.test}
    entry = {**identity, "measured": measured_, "save": {**identity, "seconds": save_s, "bytes_per_s": 4 * n / save_s}}
    # Start-up: all but the two generations' stages and their saves (loading, tokenizing, the zero-shot
    # evaluation and the human baseline).
    entry["startup_s"] = total - sum(timing[0]["seconds"].values()) - sum(timing[1]["seconds"].values()) - 2 * save_s
    check = plan.parse_gpu_check(result, str(out))
    planned = {f"gen{g}": plan.stage_seconds(cfg, model, counted, check, g) for g in (0, 1)}
    entry["planned"] = planned
    entry["other_per_generation_s"] = max(0.0, sum(timing[1]["seconds"].values()) - sum(planned["gen1"].values()))
    return entry


def table(result: dict) -> str:
    """The printed summary of what has been measured so far (a failed stage: its error)."""
    lines = [f"device: {result['device']}   mode: {result['mode']}   torch {result['torch']}   "
             f"took {result.get('seconds', 0):.0f} s", ""]

    def gb(x: dict) -> str:
        return "-" if x.get("peak_gb") is None else f"{x['peak_gb']:.1f} ({x['reserved_gb']:.1f})"

    def failed(entry: dict) -> str:
        return "failed: " + entry["error"].splitlines()[0][:100]

    rows = [[r["shape"], r["stage"], r["precision"], str(r.get("ran_batch", r["batch"])), r["variant"] or "-",
             str(r["sequence"]), f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else failed(r) if "error" in r
             else "...", gb(r)] for r in result["rates"]]
    if rows:
        lines += [plan.format_table(["shape", "stage", "precision", "batch", "variant", "tokens", "tokens/s",
                                     "GiB (reserved)"], rows), ""]
    for r in result["rates"]:
        if r.get("skipped"):
            s = r["skipped"]
            lines.append(f"{r['shape']} {r['variant']} batch {s['batch']} not tried: its KV cache "
                         f"({s['kv_cache_gb']:.1f} GiB) exceeds the free memory ({s['free_gb']:.1f} GiB)")
    rows = []
    for p in result["protocols"]:
        label = f"{p['config']} ({p['shape']})"
        if "error" in p:
            rows.append([label, failed(p), "", "", ""])
        if "planned" in p:
            stages = " ".join(f"{k[:3]} {v:.1f}/{p['planned']['gen1'].get(k, 0):.1f}"
                              for k, v in p["measured"]["gen1"].items())
            rows.append([label, stages, f"{p['startup_s']:.0f}", f"{p['other_per_generation_s']:.0f}",
                         f"{p['save']['bytes_per_s'] / 2**20:,.0f}"])
    if rows:
        lines += ["", plan.format_table(["one generation of", "gen 1 stages, s measured/planned", "start-up s",
                                         "other s a generation", "save MiB/s"], rows)]
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
    sizes = TINY_SIZES if a.tiny else GPU_SIZES
    cuda = device.type == "cuda"
    result: dict = {"format": FORMAT, "device": torch.cuda.get_device_name() if cuda else "cpu",
                    "memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
                    "mode": "tiny" if a.tiny else "full", "torch": torch.__version__, "rates": [], "protocols": []}
    out = Path(a.out)
    check = Check(out, result)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device.type == "cpu")
    todo = items(sizes)
    for name in dict.fromkeys(i.shape for i in todo):
        measure_shape(name, [i for i in todo if i.shape == name], sizes, device, accelerator, check)
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        for name, shape_name, extra in PROTOCOLS:
            entry = {"config": name, "shape": shape_name}
            result["protocols"].append(entry)
            check.stage(f"one generation of {name}", entry, partial(protocol, name, shape_name, extra, sizes,
                                                                    Path(tmp) / name, device, result, out))
    print(table(result))
    print(f"\nwrote {out} and {out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
