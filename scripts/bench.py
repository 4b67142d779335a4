"""Where the time goes, and how the testbed compares with the obvious way, in one run on one model.

    python scripts/bench.py [--layers 4 --width 256 --vocab 8192] [--json bench.json] [--skip-e2e]

1. Training tokens/s: testbed.train vs transformers.Trainer (same model init, data, batch size, schedule),
   and model FLOPs utilisation against a matrix-multiply peak measured in this run; testbed.train in fp32
   and under bf16 autocast, and whether the CPU has AMX (without it, bf16 matmuls are emulated on a CPU).
2. Generation tokens/s, the paper's prompted 64 -> 64 setting: beam search (5 beams, repetition penalty
   3.0) and sampling, batched vs one prompt at a time.
3. Evaluation tokens/s: corpus perplexity over blocks, and per-sequence perplexities.
4. The default run end to end (`testbed run`), with the share of wall time per stage.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from testbed.config import GenerationConfig, ModelConfig, TrainConfig
from testbed.generate import generate
from testbed.metrics.perplexity import perplexity, sequence_perplexities
from testbed.mixing import human_examples
from testbed.model import autocast, build_model
from testbed.train import train


class IdTokenizer:
    """Just enough of a tokenizer to size a model: a vocabulary of ids with 0 as bos/eos/pad."""

    def __init__(self, vocab: int):
        self.vocab, self.bos_token_id, self.eos_token_id, self.pad_token_id = vocab, 0, 0, 0

    def __len__(self) -> int:
        return self.vocab


def cpu_features() -> dict:
    """The CPU's AMX and AVX-512 BF16 flags (/proc/cpuinfo) and the instruction set torch's kernels use."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux
        flags = set()
    return {"amx": sorted(f for f in flags if f.startswith("amx")), "avx512_bf16": "avx512_bf16" in flags,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Best FLOP/s of an n x n x n matrix product (the denominator of MFU)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(8):
        sync(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def train_flops_per_token(model, block: int) -> float:
    """6 N + 12 L T d (PaLM's estimate): N counts every weight used in a matmul (not position embeddings)."""
    c = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name and "embed_positions" not in name)
    return 6 * n + 12 * c.num_hidden_layers * block * c.hidden_size


def bench_testbed_train(model, blocks: np.ndarray, cfg: TrainConfig, block: int, accelerator: Accelerator) -> float:
    result = train(model, human_examples(blocks), blocks[:1], cfg, block, accelerator, seed=0, epochs=1, desc="testbed")
    return result.tokens / result.seconds


def bench_trainer(model, blocks: np.ndarray, cfg: TrainConfig, device: torch.device, repeats: int = 1) -> float:
    """Tokens/s of Trainer.train() on `blocks` (the last of `repeats` calls on the same model: with
    torch_compile, the first call compiles)."""
    import datasets
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, num_train_epochs=1, learning_rate=cfg.lr,
            lr_scheduler_type="cosine", weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0, use_cpu=device.type == "cpu", bf16=cfg.precision == "bf16", seed=0,
            torch_compile=cfg.compile)
        data = datasets.Dataset.from_dict({"input_ids": blocks.tolist(), "labels": blocks.tolist()})
        for _ in range(repeats):
            trainer = Trainer(model=model, args=args, train_dataset=data)
            t = time.perf_counter()
            trainer.train()
            sync(device)
        return blocks.size / (time.perf_counter() - t)


def bench_precisions(base, blocks: np.ndarray, cfg: TrainConfig, block: int, accelerator: Accelerator,
                     repeats: int = 2) -> dict[str, float]:
    """Best tokens/s of testbed.train in fp32 and under bf16 autocast, alternated (the machine is noisy)."""
    configs = {p: dataclasses.replace(cfg, precision=p, compile=False) for p in ("fp32", "bf16")}
    best = dict.fromkeys(configs, 0.0)
    for c in configs.values():  # warm up
        bench_testbed_train(copy.deepcopy(base), blocks[: 4 * cfg.batch_size], c, block, accelerator)
    for _ in range(repeats):
        for p, c in configs.items():
            best[p] = max(best[p], bench_testbed_train(copy.deepcopy(base), blocks, c, block, accelerator))
    return best


def bench_generation(model, prompts: np.ndarray, g: GenerationConfig, new: int, batch: int, one_at_a_time: int):
    """(batched tokens/s, one-prompt-at-a-time tokens/s)."""
    generate(model, prompts[:2], g, 4, 2, seed=0, eos=0)  # warm up
    t = time.perf_counter()
    generate(model, prompts, g, new, batch, seed=0, eos=0)
    batched = len(prompts) * new / (time.perf_counter() - t)
    t = time.perf_counter()
    generate(model, prompts[:one_at_a_time], g, new, 1, seed=0, eos=0)
    single = one_at_a_time * new / (time.perf_counter() - t)
    return batched, single


def bench_e2e() -> dict:
    """The default run in a subprocess; the share of wall time per stage from its timing.json files."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "testbed.cli", "run", f"run.out_dir={tmp}", "run.name=bench"],
                       check=True, capture_output=True)
        wall = time.perf_counter() - t
        stages: dict[str, float] = {}
        for f in sorted(Path(tmp, "bench").glob("gen_*/timing.json")):
            for k, v in json.loads(f.read_text())["seconds"].items():
                stages[k] = stages.get(k, 0.0) + v
    stages["startup, data, tokenizer, checkpoints"] = wall - sum(stages.values())
    return {"wall_seconds": wall, "stage_seconds": stages, "stage_share": {k: v / wall for k, v in stages.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="gpt2", choices=["gpt2", "opt", "llama"])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="training batch size (both loops)")
    p.add_argument("--train-blocks", type=int, default=512)
    p.add_argument("--prompts", type=int, default=64, help="prompts for batched generation")
    p.add_argument("--gen-batch", type=int, default=64)
    p.add_argument("--one-at-a-time", type=int, default=8, help="prompts generated one at a time")
    p.add_argument("--eval-blocks", type=int, default=512)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="train.precision of every measure but the fp32/bf16 comparison; auto: bf16 on a GPU")
    p.add_argument("--peak-n", type=int, default=0, help="matmul size for the peak (default 4096 CPU, 8192 GPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both training loops; steady state after a compiling warm-up call")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--json", default="bench.json")
    a = p.parse_args()

    accelerator = Accelerator(mixed_precision="no")  # lower precision is testbed's autocast (train.precision)
    device = accelerator.device
    precision = a.precision if a.precision != "auto" else "bf16" if device.type == "cuda" else "fp32"
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    blocks = rng.integers(1, a.vocab, size=(a.train_blocks, a.block))
    mcfg = ModelConfig(arch=a.arch, layers=a.layers, width=a.width, heads=a.heads, context=max(2 * a.block, 128))
    base = build_model(mcfg, IdTokenizer(a.vocab), seed=0).to(device)
    tcfg = TrainConfig(epochs=1, lr=1e-4, batch_size=a.batch, select_best=False, precision=precision,
                       compile=a.compile)
    out: dict = {"machine": platform.processor() or platform.machine(), "device": str(device),
                 "cpu": cpu_features(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "precision": precision,
                 "model": vars(mcfg) | {"vocab": a.vocab, "params": sum(p.numel() for p in base.parameters())}}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name()

    # 1. Training: best tokens/s of each loop.
    peak = matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32,
                       a.peak_n or (8192 if device.type == "cuda" else 4096))
    ours, theirs = [], []
    if a.compile:  # compile once per loop (warm-up call), then time the same model again
        mine = copy.deepcopy(base)
        bench_testbed_train(mine, blocks[: 4 * a.batch], tcfg, a.block, accelerator)
        ours.append(bench_testbed_train(mine, blocks, tcfg, a.block, accelerator))
        theirs.append(bench_trainer(copy.deepcopy(base), blocks, tcfg, device, repeats=2))
    else:
        bench_testbed_train(copy.deepcopy(base), blocks[: 4 * a.batch], tcfg, a.block, accelerator)  # warm up
        for _ in range(3):  # alternate the two loops: the machine is shared and noisy
            ours.append(bench_testbed_train(copy.deepcopy(base), blocks, tcfg, a.block, accelerator))
            theirs.append(bench_trainer(copy.deepcopy(base), blocks, tcfg, device))
    flops = train_flops_per_token(base, a.block)
    out["train"] = {"testbed_tokens_per_s": max(ours), "trainer_tokens_per_s": max(theirs),
                    "flops_per_token": flops, "peak_flops": peak, "all_testbed": ours, "all_trainer": theirs}
    out["train_vs_trainer"] = max(ours) / max(theirs)
    out["mfu"] = flops * max(ours) / peak
    by_precision = bench_precisions(base, blocks, tcfg, a.block, accelerator)
    out["train_by_precision"] = {**by_precision, "bf16_vs_fp32": by_precision["bf16"] / by_precision["fp32"]}

    # 2. Generation: the paper's 64 -> 64 prompted setting.
    model = base.eval()
    prompts = blocks[: a.prompts, :64] if a.block >= 64 else blocks[: a.prompts]
    beam = GenerationConfig(do_sample=False, num_beams=5, repetition_penalty=3.0)
    sampling = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0)
    gen = {}
    for name, g in (("beam5", beam), ("sampling", sampling)):
        with autocast(precision, device):
            batched, single = bench_generation(model, prompts, g, 64, a.gen_batch, a.one_at_a_time)
        gen[name] = {"batched_tokens_per_s": batched, "one_at_a_time_tokens_per_s": single, "ratio": batched / single}
    out["generation"] = gen
    out["generate_vs_batch1"] = gen["beam5"]["ratio"]

    # 3. Evaluation.
    eval_blocks = rng.integers(1, a.vocab, size=(a.eval_blocks, a.block))
    with autocast(precision, device):
        perplexity(model, eval_blocks[:8], batch_size=64)
        t = time.perf_counter()
        perplexity(model, eval_blocks, batch_size=64)
        ppl_tps = eval_blocks.size / (time.perf_counter() - t)
        lengths = rng.integers(a.block // 2, a.block + 1, size=a.eval_blocks)
        t = time.perf_counter()
        sequence_perplexities(model, eval_blocks, lengths, batch_size=64)
        seq_tps = lengths.sum() / (time.perf_counter() - t)
    out["evaluation"] = {"perplexity_tokens_per_s": ppl_tps, "per_sequence_tokens_per_s": seq_tps}

    # 4. The default run end to end.
    if not a.skip_e2e:
        out["default_run"] = bench_e2e()

    cpu = out["cpu"]
    print(f"\nmachine: {out.get('device_name', out['machine'])}, torch {out['torch']}, {out['threads']} threads, "
          f"precision {precision}; model {a.arch} {a.layers}x{a.width}, vocab {a.vocab}, "
          f"{out['model']['params'] / 1e6:.1f}M params, block {a.block}, batch {a.batch}")
    print(f"CPU: AMX {' '.join(cpu['amx']) or 'no'}, avx512_bf16 {'yes' if cpu['avx512_bf16'] else 'no'}, "
          f"torch kernels {cpu['torch_cpu_capability']}")
    rows = [
        ("train tokens/s: testbed", f"{out['train']['testbed_tokens_per_s']:,.0f}"),
        ("train tokens/s: transformers.Trainer", f"{out['train']['trainer_tokens_per_s']:,.0f}"),
        ("train_vs_trainer", f"{out['train_vs_trainer']:.2f}x"),
        ("matmul peak", f"{peak / 1e9:,.0f} GFLOP/s"),
        ("mfu", f"{out['mfu']:.1%}"),
        ("train tokens/s: testbed fp32", f"{by_precision['fp32']:,.0f}"),
        ("train tokens/s: testbed bf16 autocast", f"{by_precision['bf16']:,.0f}"),
        ("bf16 / fp32", f"{out['train_by_precision']['bf16_vs_fp32']:.2f}x"),
    ]
    for name in ("beam5", "sampling"):
        r = gen[name]
        rows += [(f"generate {name}: batched tokens/s", f"{r['batched_tokens_per_s']:,.0f}"),
                 (f"generate {name}: one prompt at a time", f"{r['one_at_a_time_tokens_per_s']:,.0f}"),
                 (f"generate {name}: ratio", f"{r['ratio']:.1f}x")]
    rows += [("perplexity tokens/s", f"{ppl_tps:,.0f}"), ("per-sequence perplexity tokens/s", f"{seq_tps:,.0f}")]
    if "default_run" in out:
        d = out["default_run"]
        rows.append(("default run wall time", f"{d['wall_seconds']:.1f} s"))
        rows += [(f"  share: {k}", f"{v:.0%}") for k, v in sorted(d["stage_share"].items(), key=lambda kv: -kv[1])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v:>16}")
    Path(a.json).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
