"""Executing one run of a sweep, the same way under every launcher: a `testbed run` process whose output goes
to logs/NAME.log, its job recorded in jobs/NAME.json (id, state, exit code), and a run that takes generations
from another waiting for them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from testbed import rundir
from testbed.sweep import sharing
from testbed.sweep.grid import SweepRun, run_command


def job_file(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / "jobs" / f"{name}.json"


def log_file(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / "logs" / f"{name}.log"


def record_job(sweep_dir: Path, name: str, **fields) -> None:
    f = job_file(sweep_dir, name)
    f.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(f.read_text()) if f.is_file() else {}
    rundir.write_json(f, {**old, **fields})


# Exit codes of a run stopped by a signal (scancel, pre-emption, Ctrl-C): not a failure, it resumes.


# Exit codes of a run stopped by a signal (scancel, pre-emption, Ctrl-C): not a failure, it resumes.
STOPPED_CODES = (130, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT)


class Processes:
    """The `testbed run` processes a launcher runs. Once stopped it starts none, and the running ones get
    SIGTERM, on which they leave as after Ctrl-C: finished generations kept, to resume."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopped = False

    def run(self, cmd: list[str], **popen) -> int | None:
        """Run `cmd` to its end and return its exit code; None if stopped before it could start."""
        with self._lock:
            if self.stopped:
                return None
            proc = subprocess.Popen(cmd, **popen)
            self._running.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._running.discard(proc)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for proc in self._running:
                proc.send_signal(signal.SIGTERM)


def append_log(sweep_dir: Path, name: str, line: str) -> None:
    log = log_file(sweep_dir, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def directory_state(sweep_dir: Path, run: SweepRun) -> str:
    """What the run directory says: 'done', 'partial' (resume it) or 'new'."""
    d = sweep_dir / run.name
    if not (d / "config.yaml").is_file():
        return "new"
    return "done" if rundir.completed(d, run.generations) > run.generations else "partial"


def last_line(log: Path) -> str:
    """The last line a run printed (progress bars: their latest state)."""
    if not log.is_file():
        return ""
    with open(log, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        tail = f.read().decode("utf-8", errors="replace")
    lines = [part.strip() for line in tail.splitlines() for part in line.split("\r")[-1:] if part.strip()]
    return lines[-1] if lines else ""


def execute(path: str, run: SweepRun, sweep_dir: Path, job_id: str | None = None, env: dict | None = None,
            stop_after: int | None = None, wait: bool = True, processes: Processes | None = None) -> int:
    """Run (or resume, or skip) one run of the sweep, or its generations up to `stop_after`, as a `testbed
    run` process whose output is appended to its log; record the job's state; return the exit code (130 if
    `processes` was stopped first). A run that takes generations from another waits for them (`wait`, the
    local launcher), or fails at once if they are missing (Slurm, where a job dependency started it after
    them)."""
    processes = processes or Processes()
    state = directory_state(sweep_dir, run)
    if state == "done" or stop_after is not None and rundir.is_complete(sweep_dir / run.name, stop_after):
        return 0
    log = log_file(sweep_dir, run.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    record_job(sweep_dir, run.name, job_id=job_id, state="running", exit_code=None, log=str(log))
    if state == "new" and run.prefix_from and not (wait_for_prefix(sweep_dir, run, processes) if wait
                                                   else prefix_ready(sweep_dir, run)):
        stopped = processes.stopped
        record_job(sweep_dir, run.name, state="stopped" if stopped else "failed", exit_code=130 if stopped else 1)
        return 130 if stopped else 1
    cmd = [sys.executable, "-m", "testbed.cli", *run_command(path, run, sweep_dir, resume=state == "partial")[1:]]
    if stop_after is not None:
        cmd += ["--stop-after", str(stop_after)]
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        code = processes.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        if code is None:
            f.write("stopped before it started\n")
            code = 130
    # Generations up to stop_after done: the run waits for the job that continues it.
    done = "done" if stop_after is None else "pending"
    record_job(sweep_dir, run.name, state=done if code == 0 else "stopped" if code in STOPPED_CODES else "failed",
            exit_code=code)
    return code


def waiting_line(run: SweepRun) -> str:
    return f"waiting for the shared {sharing.shared_part(run.prefix_until)} of {run.prefix_from}"


def wait_for_prefix(sweep_dir: Path, run: SweepRun, processes: Processes | None = None, poll_s: float = 2.0) -> bool:
    """Wait until the run this one takes generations 0..k from has completed them; False if it failed or
    `processes` was stopped. Only the local launcher waits so, in a process that holds no allocation."""
    k = run.prefix_until
    append_log(sweep_dir, run.name, waiting_line(run))
    while not rundir.is_complete(sweep_dir / run.prefix_from, k):
        if processes is not None and processes.stopped:
            return False
        job = job_file(sweep_dir, run.prefix_from)
        if job.is_file() and json.loads(job.read_text()).get("state") == "failed":
            append_log(sweep_dir, run.name,
                 f"error: {run.prefix_from}, whose {sharing.shared_part(k)} this run shares, failed")
            return False
        time.sleep(poll_s)
    return True


def prefix_ready(sweep_dir: Path, run: SweepRun) -> bool:
    """Whether the generations this run takes from another exist (logged when they do not)."""
    if rundir.is_complete(sweep_dir / run.prefix_from, run.prefix_until):
        return True
    append_log(sweep_dir, run.name, f"error: {sharing.shared_part(run.prefix_until)} of {run.prefix_from}, which this "
                              "run shares, are not complete (the job that computes them did not finish them)")
    return False
