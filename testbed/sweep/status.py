"""A sweep's status from its directory alone (sweep.json, jobs/, logs/ and the runs) and, under Slurm, the
queue: what `testbed sweep --status` prints. It imports neither torch nor the launchers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testbed import rundir
from testbed.sweep import sharing
from testbed.sweep.execution import directory_state, job_file, last_line, log_file, waiting_line
from testbed.sweep.grid import SweepRun

RUN_STATES = ("done", "running", "requeued", "pending", "stopped", "partial", "failed", "new")


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Job id -> squeue's state (PENDING, RUNNING, ...) and reason (Dependency, Priority, ...) for the jobs
    still in the queue."""
    ids = [j for j in job_ids if j]
    if not ids:
        return {}
    try:
        arrays = ",".join(sorted({j.split("_")[0] for j in ids}))
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %r", "-j", arrays], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {p[0]: (p[1], p[2]) for line in out.splitlines() if len(p := line.split()) == 3}


def run_states(sweep_dir: Path, runs: list[SweepRun], launcher: str) -> dict[str, dict]:
    """Each run's state (one of RUN_STATES), job id and last log line, or why it waits or failed. A Slurm
    run is `requeued` while the job that ran it is back in the queue (pre-empted, time limit, scontrol
    requeue); a follower whose leader failed before the shared generations is `failed` (Slurm cancelled
    its job: the dependency can never be satisfied)."""
    jobs = {r.name: json.loads(f.read_text()) if (f := job_file(sweep_dir, r.name)).is_file() else {}
            for r in runs}
    ids = [i for j in jobs.values() for i in j.get("job_ids") or [j.get("job_id") or ""]]
    queue = queue_states(ids) if launcher == "slurm" else {}
    out: dict[str, dict] = {}
    for r in runs:  # leaders come first
        job = jobs[r.name]
        state, last = directory_state(sweep_dir, r), last_line(log_file(sweep_dir, r.name))
        queued = [queue[i] for i in job.get("job_ids") or [job.get("job_id")] if i in queue]
        shared = r.prefix_from is not None and not rundir.is_complete(sweep_dir / r.prefix_from, r.prefix_until)
        if state != "done":
            if any(s == "RUNNING" for s, _ in queued) or launcher == "local" and job.get("state") == "running":
                state = "running"
            elif queue.get(job.get("job_id") or "", ("",))[0] == "PENDING" and job.get("state") in ("running",
                                                                                                      "stopped"):
                state = "requeued"  # the job that ran it is back in the queue
            elif queued:
                state = "pending"
                if shared and any(reason == "Dependency" for _, reason in queued):
                    last = waiting_line(r)
            elif job.get("state") == "failed":
                state = "failed"
            elif job.get("state") == "stopped" and state == "partial":
                state = "stopped"
            elif shared and job.get("state") == "pending" and out.get(r.prefix_from, {}).get("state") == "failed":
                state, last = "failed", (f"cancelled: {r.prefix_from} failed before its "
                                         f"{sharing.shared_part(r.prefix_until)}, which this run takes, were done")
        out[r.name] = {"state": state, "job_id": job.get("job_id"), "last": last, "restarts": job.get("restarts", 0)}
    return out


def read_sweep(sweep_dir: Path) -> tuple[str, list[SweepRun], str]:
    f = sweep_dir / "sweep.json"
    if not f.is_file():
        raise rundir.RunDirError(f"{sweep_dir} is not a sweep directory (no sweep.json): start it with testbed sweep")
    plan_ = json.loads(f.read_text())
    # Sweeps planned before shared prefixes recorded `gen0_from`: the same as prefix_from up to generation 0.
    runs = [SweepRun(**{"prefix_from" if k == "gen0_from" else k: v for k, v in r.items()}) for r in plan_["runs"]]
    return plan_["config"], runs, plan_["launcher"]


def show_status(sweep_dir: Path) -> int:
    """Print one line per run: state, job id, the last line of its log. 0 when every run is done."""
    _, runs, launcher = read_sweep(sweep_dir)
    states = run_states(sweep_dir, runs, launcher)
    width = max(len(n) for n in states)
    print(f"{sweep_dir} ({launcher}):")
    for name, s in states.items():
        # A job Slurm requeued (pre-emption, time limit) that runs again says so: resumed after N requeues.
        state = f"{s['state']}, resumed x{s['restarts']}" if s["restarts"] and s["state"] != "requeued" else s["state"]
        print(f"  {name.ljust(width)}  {state:<8}  {s['job_id'] or '-':<10}  {s['last'][:100]}")
    counts = {k: sum(s["state"] == k for s in states.values()) for k in RUN_STATES}
    print("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return 0 if counts["done"] == len(runs) else 1
