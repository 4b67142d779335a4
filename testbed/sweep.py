"""Sweeps: the grid of runs of one config, each an independent `testbed run` process, and their launchers.

Runs live in one sweep directory, named by the values that vary. A sweep started again skips finished
runs and resumes unfinished ones. Launchers:
- local: `--jobs N` runs at once on this machine, each with its own GPUs (`--gpus-per-run K`) if it has any;
- slurm: job arrays through submitit; a run pre-empted or stopped at its time limit is requeued and
  continues with `--resume`; a run that takes generations from another waits in the queue on a job
  dependency (see slurm_jobs).
`--list` prints one command line per run instead; `--status` shows each run's state. Ctrl-C or SIGTERM
stops a local sweep: its running runs get SIGTERM and stop, to resume; no other run starts.

The sweep directory holds `sweep.json` (the config, the runs, the launcher), `logs/NAME.log` (each run's
output) and `jobs/NAME.json` (each run's job: id, state, exit code), which `--status` reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed import config, rundir, sharing
from testbed.config import ConfigError, SlurmConfig

RUN_STATES = ("done", "running", "requeued", "pending", "stopped", "partial", "failed", "new")


@dataclass
class SweepRun:
    name: str
    overrides: list[str]  # key=value, in a stable order
    generations: int = 0  # filled in by plan(), from the run's checked config
    pretrained: bool = False  # filled in by plan(): the run fine-tunes a pretrained base (pretrain.source)
    prefix_from: str | None = None  # the run whose generations 0..prefix_until this one takes (shared prefix)
    prefix_until: int = 0


def _value(v) -> str:
    """A value as a run name and an override write it."""
    if isinstance(v, (list, dict)):  # e.g. mixing.schedule: JSON, which the override parser reads as YAML
        return json.dumps(v)
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _override(key: str, v) -> str:
    """key=value as `testbed run` reads it: an empty value is null (a string key takes "null" as a string)."""
    return f"{key}={'' if v is None else _value(v)}"


def _split(values: str) -> list[str]:
    """Split at the commas outside brackets and braces: 'a,[b,c],{d: 1, e: 2}' -> ['a', '[b,c]', '{d: 1, e: 2}']."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(values):
        depth += (c in "[{") - (c in "]}")
        if c == "," and depth == 0:
            parts, start = [*parts, values[start:i]], i + 1
    return [*parts, values[start:]]


def parse_axes(items: list[str]) -> dict[str, list]:
    """['a.b=1,2', 'c.d=[x, y]', 'sweep.grid.e=3'] -> {'a.b': ['1', '2'], 'c.d': ['x', 'y'], 'e': ['3']}: a grid
    axis each. Values are split at the commas outside brackets; a YAML list [x, y] gives the values x and y,
    except for a key that holds a list itself (mixing.schedule=[...],[...]: two values). A key written as
    its grid entry, sweep.grid.KEY, is KEY."""
    axes = {}
    for key, text in config.parse_overrides(items).items():
        key = key.removeprefix("sweep.grid.")
        values = []
        for part in (v.strip() for v in _split(text)):
            if part.startswith("[") and not config.takes_list(key):
                try:
                    listed = yaml.safe_load(part)
                except yaml.YAMLError:
                    listed = None
                if not isinstance(listed, list):
                    raise ConfigError(f"sweep axis '{key}': {part!r} is not a YAML list of values")
                values += listed
            elif part != "":
                values.append(part)
        if not values:
            raise ConfigError(f"sweep axis '{key}' has no values")
        axes[key] = values
    return axes


def setting_slug(name: str) -> str:
    """A setting's name as its runs' directory names carry it: letters, digits and . _ = - only."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", name).strip("-")


def check_setting_names(cfg: config.Config) -> None:
    """A setting's optional `name` (its label in reports; its runs' names carry it, see setting_slug) is a
    non-empty string, no two name the same runs, and a setting with a list or mapping value has one (such a
    value cannot name a run)."""
    names = [s.get("name") for s in cfg.sweep.settings]
    for i, (name, raw) in enumerate(zip(names, cfg.sweep.settings)):
        key = f"sweep.settings[{i}]"
        if name is not None and (not isinstance(name, str) or not setting_slug(name)):
            raise ConfigError(f"config key '{key}.name': expected a non-empty string with a letter or digit, "
                              f"got {name!r}")
        if name is None and any(isinstance(v, (list, dict)) for v in raw.values()):
            raise ConfigError(f"config key '{key}.name': a setting with a list or mapping value needs a name "
                              "(it names the setting's runs)")
    given = [setting_slug(n) for n in names if n is not None]
    if len(set(given)) != len(given):
        raise ConfigError(f"config key 'sweep.settings': two settings share a name ({', '.join(given)})")


def _resolve(cfg: config.Config, values: dict, grid: dict) -> tuple[dict, config.Config]:
    """One run's values and config: `values` less the grid keys that the run does not read
    (mixing.human_fraction under replace) as far as it stays valid without them, since such an axis makes
    no runs that differ."""
    run = config.overridden(cfg, [_override(k, v) for k, v in values.items()])
    for key in sorted(config.unread_keys(run) & set(grid) & set(values)):
        fewer = {k: v for k, v in values.items() if k != key}
        with contextlib.suppress(ConfigError):
            run, values = config.overridden(cfg, [_override(k, v) for k, v in fewer.items()]), fewer
    return values, run


def expand(cfg: config.Config, cli_axes: dict[str, list]) -> list[SweepRun]:
    """settings x grid (CLI axes replace file axes of the same key); each run named by what varies. A
    setting's `name` labels it in reports and stands for its own values in run names (needed when a value is
    a list or mapping, e.g. mixing.schedule); it is not a config key.

    A grid axis over a key that a setting sets replaces the setting's value there, and the setting's name,
    which stood for that value, goes. A run leaves out the grid values it does not read (mixing.human_fraction
    under replace), and runs that then compute the same thing under the same name are one run."""
    check_setting_names(cfg)
    grid = {**cfg.sweep.grid, **cli_axes}
    settings = [{k: v for k, v in s.items() if k != "name"} for s in cfg.sweep.settings] or [{}]
    # A setting whose key the grid sets loses its name, unless a list or mapping value needs it (the grid's
    # value then joins the name in its runs' names).
    names = [None if set(setting) & set(grid) and not any(isinstance(v, (list, dict)) for v in setting.values())
             else s.get("name") for s, setting in zip(cfg.sweep.settings, settings)] or [None]
    made: list[tuple[str | None, dict, dict]] = []  # (setting name, setting, values) of each distinct run
    resolved: list[dict] = []
    for name, setting in zip(names, settings):
        for combo in itertools.product(*grid.values()):
            values, run_cfg = _resolve(cfg, {**setting, **dict(zip(grid, combo))}, grid)
            run = {k: v for k, v in config.flatten(run_cfg.to_dict()).items() if k not in config.unread_keys(run_cfg)}
            if (name, run) not in zip((m[0] for m in made), resolved):
                made.append((name, setting, values))
                resolved.append(run)
    for key in grid:
        if len(grid[key]) > 1 and not any(key in values for _, _, values in made):
            raise ConfigError(f"config key '{key}': no run of the sweep reads it (e.g. mixing.human_fraction "
                              "applies to mixing.strategy=fixed_fraction), so its values make no different runs")
    # The keys whose value (or absence) differs between runs name them; a named setting stands for its own.
    keys = {k for _, _, values in made for k in values}
    varying = {k for k in keys if len({_value(v[k]) if k in v else None for _, _, v in made}) > 1}
    runs = []
    for name, setting, values in made:
        # A path or hub name (model.name_or_path as an axis) is named by its last part: names are not paths.
        parts = [f"{k}={_value(v).rstrip('/').rsplit('/', 1)[-1]}" for k, v in values.items()
                 if k in varying and (name is None or k not in setting or k in grid)]
        runs.append(SweepRun(",".join(([setting_slug(name)] if name else []) + parts) or "run",
                             [_override(k, v) for k, v in values.items()]))
    names = [r.name for r in runs]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"sweep runs are not distinct: two runs would be named {n!r} (name the settings, "
                              "or give values that differ in their last part)")
    return runs


def share_prefixes(runs: list[SweepRun], configs: list[config.Config], sweep_dir: Path) -> list[SweepRun]:
    """Each run takes, from the earlier run it agrees with longest, the generations 0..k that both compute
    alike (sharing.shared_prefix: e.g. one seed's settings that differ only in mixing share generation 0;
    runs that switch from replace to human data at different generations share the replace generations up
    to the earlier switch), so each common prefix is computed once. Beyond generation 0 the leader must keep
    every checkpoint (run.keep_checkpoints=all), since the follower continues from model k. Runs come back
    in an order where each leader precedes its followers."""
    depth: dict[str, int] = {}
    for i, (r, cfg) in enumerate(zip(runs, configs)):
        best, until = None, sharing.NONE
        for j in range(i):
            k = sharing.shared_prefix(configs[j], cfg)
            k = min(k, 0) if configs[j].run.keep_checkpoints != "all" else k
            if k > until:
                best, until = j, k
        depth[r.name] = 0
        if best is not None:
            r.prefix_from, r.prefix_until = runs[best].name, until
            r.overrides = [*r.overrides, f"run.prefix_from={sweep_dir / runs[best].name}", f"run.prefix_until={until}"]
            depth[r.name] = depth[runs[best].name] + 1
    return sorted(runs, key=lambda r: depth[r.name])


def plan(path: str, cli_items: list[str], out: str | None, share: bool = False) -> tuple[Path, list[SweepRun]]:
    """Check every run's config (errors name the key) and decide the sweep directory: --out, else
    `<run.out_dir>/<config stem>-sweep` with run.out_dir from the command line or the config. With
    `share`, runs that would compute the same first generations share them (see share_prefixes)."""
    cfg = config.load(path)
    axes = parse_axes(cli_items)
    if "run.name" in axes:
        raise ConfigError("config key 'run.name': a sweep names its runs by their values; it cannot be set")
    out_dir = axes.pop("run.out_dir", [cfg.run.out_dir])
    if len(out_dir) > 1:
        raise ConfigError("config key 'run.out_dir': one sweep has one directory; use --out DIR")
    if out is not None and "run.out_dir" in config.parse_overrides(cli_items):
        raise ConfigError("config key 'run.out_dir': give either run.out_dir or --out, not both")
    runs = expand(cfg, axes)
    configs = [config.load(path, r.overrides) for r in runs]
    for r, c in zip(runs, configs):
        r.generations, r.pretrained = c.run.generations, c.pretrain.source != "none"
    sweep_dir = (Path(out) if out else Path(out_dir[0]) / f"{Path(path).stem}-sweep").resolve()
    return sweep_dir, share_prefixes(runs, configs, sweep_dir) if share else runs


def command(path: str, run: SweepRun, sweep_dir: Path, resume: bool = False) -> list[str]:
    args = ["testbed", "run", path, *run.overrides, f"run.out_dir={sweep_dir}", f"run.name={run.name}"]
    return [*args, "--resume"] if resume else args


def progress(sweep_dir: Path, run: SweepRun) -> str:
    """What the run directory says: 'done', 'partial' (resume it) or 'new'."""
    d = sweep_dir / run.name
    if not (d / "config.yaml").is_file():
        return "new"
    return "done" if rundir.completed(d, run.generations) > run.generations else "partial"


# ---------------------------------------------------------------------------------------------
# Executing one run, the same way under every launcher.


def _job_file(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / "jobs" / f"{name}.json"


def log_file(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / "logs" / f"{name}.log"


def _record(sweep_dir: Path, name: str, **fields) -> None:
    f = _job_file(sweep_dir, name)
    f.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(f.read_text()) if f.is_file() else {}
    rundir.write_json(f, {**old, **fields})


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


def _log(sweep_dir: Path, name: str, line: str) -> None:
    log = log_file(sweep_dir, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def execute(path: str, run: SweepRun, sweep_dir: Path, job_id: str | None = None, env: dict | None = None,
            stop_after: int | None = None, wait: bool = True, processes: Processes | None = None) -> int:
    """Run (or resume, or skip) one run of the sweep, or its generations up to `stop_after`, as a `testbed
    run` process whose output is appended to its log; record the job's state; return the exit code (130 if
    `processes` was stopped first). A run that takes generations from another waits for them (`wait`, the
    local launcher), or fails at once if they are missing (Slurm, where a job dependency started it after
    them)."""
    processes = processes or Processes()
    state = progress(sweep_dir, run)
    if state == "done" or stop_after is not None and rundir.is_complete(sweep_dir / run.name, stop_after):
        return 0
    log = log_file(sweep_dir, run.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    _record(sweep_dir, run.name, job_id=job_id, state="running", exit_code=None, log=str(log))
    if state == "new" and run.prefix_from and not (wait_for_prefix(sweep_dir, run, processes) if wait
                                                   else prefix_ready(sweep_dir, run)):
        stopped = processes.stopped
        _record(sweep_dir, run.name, state="stopped" if stopped else "failed", exit_code=130 if stopped else 1)
        return 130 if stopped else 1
    cmd = [sys.executable, "-m", "testbed.cli", *command(path, run, sweep_dir, resume=state == "partial")[1:]]
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
    _record(sweep_dir, run.name, state=done if code == 0 else "stopped" if code in STOPPED_CODES else "failed",
            exit_code=code)
    return code


def waiting_line(run: SweepRun) -> str:
    return f"waiting for the shared {sharing.shared_part(run.prefix_until)} of {run.prefix_from}"


def wait_for_prefix(sweep_dir: Path, run: SweepRun, processes: Processes | None = None, poll_s: float = 2.0) -> bool:
    """Wait until the run this one takes generations 0..k from has completed them; False if it failed or
    `processes` was stopped. Only the local launcher waits so, in a process that holds no allocation."""
    k = run.prefix_until
    _log(sweep_dir, run.name, waiting_line(run))
    while not rundir.is_complete(sweep_dir / run.prefix_from, k):
        if processes is not None and processes.stopped:
            return False
        job = _job_file(sweep_dir, run.prefix_from)
        if job.is_file() and json.loads(job.read_text()).get("state") == "failed":
            _log(sweep_dir, run.name,
                 f"error: {run.prefix_from}, whose {sharing.shared_part(k)} this run shares, failed")
            return False
        time.sleep(poll_s)
    return True


def prefix_ready(sweep_dir: Path, run: SweepRun) -> bool:
    """Whether the generations this run takes from another exist (logged when they do not)."""
    if rundir.is_complete(sweep_dir / run.prefix_from, run.prefix_until):
        return True
    _log(sweep_dir, run.name, f"error: {sharing.shared_part(run.prefix_until)} of {run.prefix_from}, which this "
                              "run shares, are not complete (the job that computes them did not finish them)")
    return False


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
            _record(self.sweep_dir, self.run.name, restarts=restarts)
            _log(self.sweep_dir, self.run.name, f"requeued by Slurm (restart {restarts} of job {job}): resuming")
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


# ---------------------------------------------------------------------------------------------
# Launchers.


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
    todo = [r for r in runs if progress(sweep_dir, r) != "done"]
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
            _record(sweep_dir, r.name, job_id=mine[0], job_ids=mine, state="pending", exit_code=None, restarts=0,
                    log=str(log_file(sweep_dir, r.name)))
    return list(ids.values())


# ---------------------------------------------------------------------------------------------
# Status.


def last_line(log: Path) -> str:
    """The last line a run printed (progress bars: their latest state)."""
    if not log.is_file():
        return ""
    with open(log, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        tail = f.read().decode("utf-8", errors="replace")
    lines = [part.strip() for line in tail.splitlines() for part in line.split("\r")[-1:] if part.strip()]
    return lines[-1] if lines else ""


def _slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
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
    jobs = {r.name: json.loads(f.read_text()) if (f := _job_file(sweep_dir, r.name)).is_file() else {}
            for r in runs}
    ids = [i for j in jobs.values() for i in j.get("job_ids") or [j.get("job_id") or ""]]
    queue = _slurm_states(ids) if launcher == "slurm" else {}
    out: dict[str, dict] = {}
    for r in runs:  # leaders come first
        job = jobs[r.name]
        state, last = progress(sweep_dir, r), last_line(log_file(sweep_dir, r.name))
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


def _load_plan(sweep_dir: Path) -> tuple[str, list[SweepRun], str]:
    f = sweep_dir / "sweep.json"
    if not f.is_file():
        raise rundir.RunDirError(f"{sweep_dir} is not a sweep directory (no sweep.json): start it with testbed sweep")
    plan_ = json.loads(f.read_text())
    # Sweeps planned before shared prefixes recorded `gen0_from`: the same as prefix_from up to generation 0.
    runs = [SweepRun(**{"prefix_from" if k == "gen0_from" else k: v for k, v in r.items()}) for r in plan_["runs"]]
    return plan_["config"], runs, plan_["launcher"]


def show_status(sweep_dir: Path) -> int:
    """Print one line per run: state, job id, the last line of its log. 0 when every run is done."""
    _, runs, launcher = _load_plan(sweep_dir)
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


def wait_slurm(sweep_dir: Path, runs: list[SweepRun], poll_s: float = 2.0) -> list[str]:
    """Block until no run is pending or running; return the names of the runs not done."""
    while True:
        states = run_states(sweep_dir, runs, "slurm")
        if not any(s["state"] in ("pending", "running", "requeued") for s in states.values()):
            return [n for n, s in states.items() if s["state"] != "done"]
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------
# The command.


def run_all(path: str, cli_items: list[str], out: str | None, list_only: bool, launcher: str = "local",
            jobs: int = 1, gpus_per_run: int | None = None, slurm_flags: dict | None = None,
            wait: bool = False, share: bool = True) -> int:
    sweep_dir, runs = plan(path, cli_items, out, share and not list_only)  # listed commands run in any order
    if list_only:
        for r in runs:
            print(shlex.join(command(path, r, sweep_dir)))
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
        slurm = dataclasses.replace(config.load(path).sweep.slurm,
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
