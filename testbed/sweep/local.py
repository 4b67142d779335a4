"""The local launcher: `--jobs N` runs at once on this machine, each with its own GPUs (`--gpus-per-run K`).
Ctrl-C or SIGTERM stops the running runs (they resume) and starts no other."""

from __future__ import annotations

import os
import time
from pathlib import Path

from testbed.config import ConfigError
from testbed.sweep.execution import Processes, directory_state, execute, last_line, log_file
from testbed.sweep.grid import SweepRun


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def run_local(path: str, runs: list[SweepRun], sweep_dir: Path, jobs: int, gpus_per_run: int) -> list[str]:
    """Run the unfinished runs, `jobs` at a time, each in its own process with its own GPUs; return the
    names of the runs that failed."""
    import queue
    from concurrent.futures import ThreadPoolExecutor, as_completed

    slots: queue.Queue[list[str]] = queue.Queue()
    if gpus_per_run:
        gpus = _gpu_ids()
        if len(gpus) < gpus_per_run:
            raise ConfigError(f"--gpus-per-run {gpus_per_run}: this machine shows {len(gpus)} GPU(s)")
        jobs = min(jobs, len(gpus) // gpus_per_run)
        for i in range(jobs):
            slots.put(gpus[i * gpus_per_run : (i + 1) * gpus_per_run])
    else:
        for _ in range(jobs):
            slots.put([])
    threads = max(1, (os.cpu_count() or 1) // jobs)
    todo = [r for r in runs if directory_state(sweep_dir, r) != "done"]
    print(f"sweep: {len(runs) - len(todo)} of {len(runs)} runs done; running {len(todo)}, {jobs} at a time "
          f"(logs in {sweep_dir / 'logs'})", flush=True)

    processes = Processes()

    def one(r: SweepRun) -> tuple[int, float]:
        slot = slots.get()
        env = dict(os.environ)
        if gpus_per_run:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(slot)
        if jobs > 1:  # runs side by side share the cores instead of each taking all of them
            env.setdefault("OMP_NUM_THREADS", str(threads))
        t0 = time.perf_counter()
        try:
            if processes.stopped:
                return 130, 0.0
            print(f"  {r.name}: started" + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if slot else ""), flush=True)
            return execute(path, r, sweep_dir, env=env, processes=processes), time.perf_counter() - t0
        finally:
            slots.put(slot)

    failed = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(one, r): r for r in todo}
        for future in as_completed(futures):
            r = futures[future]
            code, seconds = future.result()
            if code == 0:
                print(f"  {r.name}: done in {seconds:.0f}s", flush=True)
            else:
                failed.append(r.name)
                print(f"  {r.name}: FAILED (exit code {code}): {last_line(log_file(sweep_dir, r.name))}", flush=True)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (testbed.cli): stop the running runs, start no other
        processes.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failed
