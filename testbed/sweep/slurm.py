"""The Slurm launcher: job arrays through submitit. A run pre-empted or stopped at its time limit is requeued
and continues with `--resume`; a run that takes generations from another waits in the queue on a job
dependency (see slurm_jobs)."""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import rundir
from testbed.config import ConfigError, SlurmConfig
from testbed.sweep import sharing
from testbed.sweep.execution import append_log, execute, log_file, record_job
from testbed.sweep.grid import SweepRun
from testbed.sweep.status import run_states


class SlurmRun:
    """The callable of one array task: a run, or its generations up to `stop_after` (see slurm_jobs).
    Checkpointable: on pre-emption or at the time limit submitit requeues it, and it runs again, resuming
    the run from its last complete generation."""

    def __init__(self, path: str, run: SweepRun, sweep_dir: Path, stop_after: int | None = None):
        self.path, self.run, self.sweep_dir, self.stop_after = path, run, sweep_dir, stop_after

    def __call__(self) -> int:
        import submitit

        job = submitit.JobEnvironment().job_id
        env = dict(os.environ)
        if "SLURM_CPUS_PER_TASK" in env:  # the task's CPUs, not every core of the node
            env.setdefault("OMP_NUM_THREADS", env["SLURM_CPUS_PER_TASK"])
        restarts = int(env.get("SLURM_RESTART_COUNT") or 0)  # set by Slurm in a requeued job
        if restarts:
            record_job(self.sweep_dir, self.run.name, restarts=restarts)
            append_log(self.sweep_dir, self.run.name, f"requeued by Slurm (restart {restarts} of job {job}): resuming")
        code = execute(self.path, self.run, self.sweep_dir, job_id=job, env=env, stop_after=self.stop_after,
                       wait=False)
        if code != 0:
            raise RuntimeError(f"testbed run {self.run.name} exited with code {code}: see "
                               f"{log_file(self.sweep_dir, self.run.name)}")
        return code

    def checkpoint(self, *args, **kwargs):
        """Requeue the same call (submitit 1.5's signal handler looks for `checkpoint`, not only
        `__submitit_checkpoint__`: without it a time limit ends the job instead)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


@dataclass
class SlurmJob:
    """One job of a Slurm sweep: a run's generations up to `until`, started after job `after` (if any)."""

    run: SweepRun
    until: int
    after: tuple[str, int] | None  # (run name, until) of the job that must have finished first


def slurm_jobs(runs: list[SweepRun]) -> list[SlurmJob]:
    """The jobs of a Slurm sweep, each after the one it depends on.

    A run that takes generations 0..k from another (share_prefixes) must not start before they exist, and
    must not wait for them inside an allocation (a GPU held idle). So a run whose generations others take is
    cut into jobs at those generations: the first computes 0..k (`testbed run --stop-after k`), the next
    resumes it; and the follower is submitted with `--dependency=afterok:` on the job that ends at its k.
    Slurm holds it PENDING (reason Dependency) until then, and cancels it (`--kill-on-invalid-dep=yes`)
    if that job fails, so nothing hangs. Alternatives, not chosen: followers `afterok` on the whole leader
    would start only once the leader has finished, serialising the sweep (twice the wall time for the
    model-size config's 2 settings); held jobs released by the leader would need the leader to run
    `scontrol` and would show as held, not waiting. The cost of the cut: the leader's second job loads the
    data and its generation-k model again, and waits in the queue once more."""
    cuts: dict[str, set[int]] = {r.name: set() for r in runs}
    for r in runs:
        if r.prefix_from is not None:
            cuts[r.prefix_from].add(r.prefix_until)
    ends: dict[str, list[int]] = {}
    jobs = []
    for r in runs:  # leaders come first (share_prefixes)
        # A follower's generations 0..prefix_until arrive when its first job starts: its cuts lie after them.
        first = r.prefix_until if r.prefix_from is not None else sharing.NONE
        ends[r.name] = sorted(k for k in cuts[r.name] if first < k < r.generations) + [r.generations]
        after = None
        if r.prefix_from is not None:
            after = (r.prefix_from, next(e for e in ends[r.prefix_from] if e >= r.prefix_until))
        for until in ends[r.name]:
            jobs.append(SlurmJob(r, until, after))
            after = (r.name, until)
    return jobs


def submit_slurm(path: str, runs: list[SweepRun], sweep_dir: Path, slurm: SlurmConfig) -> list[str]:
    """Submit the unfinished jobs (slurm_jobs): those that depend on no unfinished job as one array, the
    others as one array per job they depend on; return their job ids."""
    import submitit
    from submitit.core.utils import FailedJobError

    todo = [j for j in slurm_jobs(runs) if not rundir.is_complete(sweep_dir / j.run.name, j.until)]
    executor = submitit.AutoExecutor(folder=sweep_dir / "slurm" / "%j", cluster="slurm",
                                     slurm_max_num_timeout=slurm.max_requeues)
    executor.update_parameters(
        name=f"testbed-{sweep_dir.name}", timeout_min=slurm.time_min, cpus_per_task=slurm.cpus_per_run,
        gpus_per_node=slurm.gpus_per_run or None, mem_gb=slurm.mem_gb, slurm_partition=slurm.partition,
        slurm_array_parallelism=slurm.array_parallelism, slurm_account=slurm.account, slurm_qos=slurm.qos,
        slurm_constraint=slurm.constraint)
    ids: dict[tuple[str, int], str] = {}
    while todo:
        groups: dict[str | None, list[SlurmJob]] = {}
        for j in todo:
            if j.after is None or rundir.is_complete(sweep_dir / j.after[0], j.after[1]):
                groups.setdefault(None, []).append(j)
            elif j.after in ids:
                groups.setdefault(ids[j.after], []).append(j)
        for after, group in groups.items():
            dependency = {} if after is None else {"dependency": f"afterok:{after}", "kill_on_invalid_dep": "yes"}
            executor.update_parameters(slurm_additional_parameters={**slurm.additional, **dependency})
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's error too
                    submitted = executor.submit_array([
                        SlurmRun(path, j.run, sweep_dir, None if j.until == j.run.generations else j.until)
                        for j in group])
            except FailedJobError as exc:
                raise ConfigError(f"config key 'sweep.slurm': sbatch refused the job: {exc}") from None
            for j, job in zip(group, submitted):
                ids[(j.run.name, j.until)] = job.job_id
        todo = [j for j in todo if (j.run.name, j.until) not in ids]
    for r in runs:
        mine = [job_id for (name, _), job_id in ids.items() if name == r.name]
        if mine:
            record_job(sweep_dir, r.name, job_id=mine[0], job_ids=mine, state="pending", exit_code=None, restarts=0,
                    log=str(log_file(sweep_dir, r.name)))
    return list(ids.values())


def wait_slurm(sweep_dir: Path, runs: list[SweepRun], poll_s: float = 2.0) -> list[str]:
    """Block until no run is pending or running; return the names of the runs not done."""
    while True:
        states = run_states(sweep_dir, runs, "slurm")
        if not any(s["state"] in ("pending", "running", "requeued") for s in states.values()):
            return [n for n, s in states.items() if s["state"] != "done"]
        time.sleep(poll_s)
