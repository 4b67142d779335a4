"""Sweeps: the grid of runs of one config, each an independent `testbed run` process.

Runs live in one sweep directory, named by the values that vary. A sweep started again skips finished
runs and resumes unfinished ones; `--list` prints one command line per run instead (for a job array).
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from testbed import config, rundir
from testbed.config import ConfigError


@dataclass
class SweepRun:
    name: str
    overrides: list[str]  # key=value, in a stable order
    generations: int = 0  # filled in by plan(), from the run's checked config


def _value(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def parse_axes(items: list[str]) -> dict[str, list[str]]:
    """['a.b=1,2', 'c.d=x'] -> {'a.b': ['1', '2'], 'c.d': ['x']}."""
    axes = {}
    for key, values in config.parse_overrides(items).items():
        axes[key] = [v for v in values.split(",") if v != ""]
        if not axes[key]:
            raise ConfigError(f"sweep axis '{key}' has no values")
    return axes


def expand(cfg: config.Config, cli_axes: dict[str, list[str]]) -> list[SweepRun]:
    """settings x grid (CLI axes replace file axes of the same key); each run named by what varies."""
    settings = [{k: _value(v) for k, v in s.items()} for s in cfg.sweep.settings] or [{}]
    grid = {k: [_value(v) for v in vs] for k, vs in cfg.sweep.grid.items()}
    grid.update(cli_axes)
    runs = []
    for setting in settings:
        for combo in itertools.product(*grid.values()):
            values = {**setting, **dict(zip(grid, combo))}
            overrides = [f"{k}={v}" for k, v in values.items()]
            varying = [f"{k}={v}" for k, v in values.items() if len({s.get(k) for s in settings}) > 1
                       or len(grid.get(k, [])) > 1]
            runs.append(SweepRun(",".join(varying) or "run", overrides))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("sweep runs are not distinct: two settings give the same values")
    return runs


def plan(path: str, cli_items: list[str], out: str | None) -> tuple[Path, list[SweepRun]]:
    """Check every run's config (errors name the key) and decide the sweep directory."""
    cfg = config.load(path)
    runs = expand(cfg, parse_axes(cli_items))
    for r in runs:
        r.generations = config.load(path, r.overrides).run.generations
    sweep_dir = Path(out) if out else Path(cfg.run.out_dir) / f"{Path(path).stem}-sweep"
    return sweep_dir, runs


def command(path: str, run: SweepRun, sweep_dir: Path, resume: bool = False) -> list[str]:
    args = ["testbed", "run", path, *run.overrides, f"run.out_dir={sweep_dir}", f"run.name={run.name}"]
    return [*args, "--resume"] if resume else args


def status(sweep_dir: Path, run: SweepRun) -> str:
    """'done', 'partial' (resume it) or 'new'."""
    d = sweep_dir / run.name
    if not (d / "config.yaml").is_file():
        return "new"
    return "done" if rundir.completed(d, run.generations) > run.generations else "partial"


def run_all(path: str, cli_items: list[str], out: str | None, list_only: bool) -> int:
    sweep_dir, runs = plan(path, cli_items, out)
    if list_only:
        for r in runs:
            print(shlex.join(command(path, r, sweep_dir)))
        return 0
    print(f"sweep: {len(runs)} runs in {sweep_dir}", flush=True)
    failed = []
    for i, r in enumerate(runs, 1):
        state = status(sweep_dir, r)
        if state == "done":
            print(f"[{i}/{len(runs)}] {r.name}: done, skipped", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {r.name}: {'resuming' if state == 'partial' else 'running'}", flush=True)
        cmd = command(path, r, sweep_dir, resume=state == "partial")
        # The same Python that runs this sweep, as an independent process.
        proc = subprocess.run([sys.executable, "-m", "testbed.cli", *cmd[1:]])
        if proc.returncode != 0:
            failed.append(r.name)
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"sweep: all {len(runs)} runs finished; report with: testbed report {sweep_dir}")
    return 0
