"""`testbed sweep`: check every run, write sweep.json, then run the grid with the launcher asked for."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

from testbed import rundir
from testbed.sweep.grid import prepare, run_command, sweep_config
from testbed.sweep.local import run_local
from testbed.sweep.slurm import submit_slurm, wait_slurm


def run_all(path: str, cli_items: list[str], out: str | None, list_only: bool, launcher: str = "local",
            jobs: int = 1, gpus_per_run: int | None = None, slurm_flags: dict | None = None,
            wait: bool = False, share: bool = True) -> int:
    sweep_dir, runs = prepare(path, cli_items, out, share and not list_only)  # listed commands run in any order
    if list_only:
        for r in runs:
            print(shlex.join(run_command(path, r, sweep_dir)))
        return 0
    path = str(Path(path).resolve())  # jobs may start elsewhere
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(sweep_dir / "sweep.json", {"config": path, "launcher": launcher,
                                                 "runs": [dataclasses.asdict(r) for r in runs]})
    shared = [r for r in runs if r.prefix_from is not None]
    total = sum(r.generations + 1 for r in runs)
    taken = sum(r.prefix_until + 1 for r in shared)
    bases = [r for r in runs if r.pretrained]
    print(f"sweep: {len(runs)} runs in {sweep_dir}" + (f"; {len(shared)} take their first generations from "
                                                     f"another run: {total - taken} of {total} generations to "
                                                     "compute" if shared else "")
          + (f"; {sum(r.prefix_from is None for r in bases)} pretrained base(s) for {len(bases)} runs"
             if bases else ""), flush=True)
    if launcher == "local":
        try:
            failed = run_local(path, runs, sweep_dir, jobs, gpus_per_run or 0)
        except KeyboardInterrupt:
            print(f"\nsweep: stopped; no run was started after the signal, and the runs stopped part-way resume "
                  f"when the sweep is started again (testbed sweep --status {sweep_dir})", file=sys.stderr)
            return 130
    else:
        slurm = dataclasses.replace(sweep_config(path, cli_items).sweep.slurm,
                                    **{k: v for k, v in (slurm_flags or {}).items() if v is not None})
        if gpus_per_run is not None:
            slurm.gpus_per_run = gpus_per_run
        ids = submit_slurm(path, runs, sweep_dir, slurm)
        arrays = sorted({i.split("_")[0] for i in ids}, key=int)
        print(f"sweep: submitted {len(ids)} job(s) as job array(s) {', '.join(arrays) or '-'}; "
              f"follow with: testbed sweep --status {sweep_dir}", flush=True)
        if not wait:
            return 0
        failed = wait_slurm(sweep_dir, runs)
    if failed:
        print(f"sweep: {len(failed)} run(s) not finished: {', '.join(failed)} (testbed sweep --status {sweep_dir}; "
              "start the sweep again to resume them)", file=sys.stderr)
        return 1
    print(f"sweep: all {len(runs)} runs finished; report with: testbed report {sweep_dir}")
    return 0
