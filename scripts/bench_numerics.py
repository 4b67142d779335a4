"""What run.portable_numerics costs: training steps of the default model shape (GPT-2, 2 layers, width 128,
vocabulary 3072, batch 16 of 64 tokens, 2 threads) under the default code paths and the portable ones,
alternated in fresh processes (both settings are read when torch first computes).

    python scripts/bench_numerics.py [--pairs 3] [--steps 40]

CPU milliseconds per step are printed beside wall-clock steps/s: on a machine shared with other jobs the
CPU time moves far less. OMP_WAIT_POLICY=PASSIVE keeps waiting threads from spinning there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SETTINGS = {"default": {"MKL_CBWR": "AUTO"}, "portable": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
            "mkl compatible only": {"MKL_CBWR": "COMPATIBLE"},
            "torch avx2 only": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO"}}


def measure(steps: int) -> str:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=128, n_head=4, n_positions=128, vocab_size=3072))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 3072, (16, 64))

    def step() -> None:
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(5):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{capability:7s} {steps / wall:6.2f} steps/s {1000 * cpu / steps:7.1f} cpu-ms/step"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one measurement, in this process
    args = p.parse_args()
    if args.measure:
        print(measure(args.steps))
        return
    for _ in range(args.pairs):
        for name, env in SETTINGS.items():
            out = subprocess.run([sys.executable, __file__, "--measure", "--steps", str(args.steps)], text=True,
                                 env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **env}, capture_output=True,
                                 check=True).stdout.strip().splitlines()[-1]
            print(f"{name:20s} {out}", flush=True)


if __name__ == "__main__":
    main()
