"""Finished runs as reports read them: loading run directories, grouping runs that differ only in
`run.seed` into settings, and per-generation statistics over a setting's seeds, with the band of
generation 0's seed-to-seed noise. Tables (report.py), figures (figures.py), recovery (recovery.py) and
the size axis (size.py) are views over this module."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from testbed.config import Config, flatten
from testbed.metrics import phases
from testbed.rundir import RunDirError, read_jsonl

# Where a run lives and what it took from another run are not what it is (run.gen0_from: runs made before
# shared prefixes generalised it).
IGNORED_KEYS = {"run.name", "run.out_dir", "run.seed", "run.prefix_from", "run.prefix_until", "run.gen0_from"}
NOISE_SIGMAS = phases.NOISE_SIGMAS  # a signal moved when it left this many standard deviations of generation 0


@dataclass
class Run:
    path: Path
    config: dict  # flat: dotted key -> value
    rows: list[dict]
    baseline: dict
    settings: list[dict] = field(default_factory=list)  # the sweep's settings (config.yaml's sweep.settings)


def load_run(path: Path) -> Run:
    rows = read_jsonl(path / "metrics.jsonl")
    baseline_file = path / "human_baseline.json"
    baseline = json.loads(baseline_file.read_text()) if baseline_file.is_file() else {}
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    sweep = cfg.pop("sweep", None) or {}  # the same for every run of a sweep: not a difference between runs
    # A key added after the run was made holds its default there (a new key keeps the old behaviour by
    # default): a run made before it and one made after do not differ in it.
    defaults = {k: v for k, v in flatten(Config().to_dict()).items() if not k.startswith("sweep.")}
    return Run(path, {**defaults, **flatten(cfg)}, rows, baseline, list(sweep.get("settings") or []))


def find_runs(paths: list[Path]) -> list[Run]:
    """Run directories given directly, or found one level below (a sweep directory)."""
    found: list[Path] = []
    for p in paths:
        if (p / "metrics.jsonl").is_file():
            found.append(p)
        else:
            found += sorted(q.parent for q in p.glob("*/metrics.jsonl"))
    if not found:
        raise RunDirError(f"no run directories (with metrics.jsonl) in {', '.join(map(str, paths))}")
    return [load_run(p) for p in found]


def corpora(runs: list[Run]) -> list[str]:
    """The names of the runs' extra evaluation sets (eval.corpora), in order of first appearance."""
    names = [k.removeprefix("eval.corpora.") for r in runs for k in r.config if k.startswith("eval.corpora.")]
    return list(dict.fromkeys(names))


def differing_keys(runs: list[Run]) -> list[str]:
    keys = sorted(set().union(*(r.config for r in runs)) - IGNORED_KEYS)
    return [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def _same(a, b) -> bool:
    return a == b or str(a).lower() == str(b).lower()  # a sweep setting's 0.5 or true against the run's value


def run_setting(run: Run) -> dict:
    """The sweep setting the run belongs to: the most specific of its sweep's settings whose values it has
    ({} when none does, or the run is not a sweep's), most specific by the values it sets away from their
    defaults, then by its keys: a run with a mixing.schedule and the default strategy (replace) belongs to
    the setting that gives the schedule, not to one that names the default strategy."""
    defaults = flatten(Config().to_dict())
    matches = [s for s in run.settings if all(_same(run.config.get(k), v) for k, v in s.items() if k != "name")]
    return max(matches, key=lambda s: (sum(not _same(defaults.get(k), v) for k, v in s.items() if k != "name"),
                                       len(s)), default={})


def _short(key: str, value) -> str:
    """A value as a label says it: a word by itself (replace, minhash), a switch by its name, a number with
    its key's last part (human_fraction=0.5)."""
    leaf = key.split(".")[-1]
    if isinstance(value, bool):
        name = key.split(".")[-2] if leaf == "enabled" else leaf  # generation.watermark.enabled -> watermark
        return name if value else f"no {name}"
    if isinstance(value, str) and value.strip() and not value.replace(".", "", 1).isdigit():
        return value
    return f"{leaf}={'null' if value is None else value}"


def setting_label(run: Run, varying: list[str]) -> str:
    """The setting's `name` in the sweep, else its values that vary between runs, short: those its sweep
    setting sets, and those no setting sets (other grid axes), without the seed."""
    setting = run_setting(run)
    if "name" in setting:
        return str(setting["name"])
    set_by_any = {k for s in run.settings for k in s}
    keys = ([k for k in setting if k in varying] + [k for k in varying if k not in set_by_any]
            or [k for k in setting if k in run.config])
    return ", ".join(dict.fromkeys(_short(k, run.config.get(k)) for k in keys)) or "run"


def group_settings(runs: list[Run]) -> dict[str, list[Run]]:
    """Setting label -> the runs of that setting (its seeds), a sweep's settings in its config's order. When
    two runs that differ get the same label (two sweeps that share setting names, say), every run is
    labelled by all the values that vary."""
    order = {id(r): next((i for i, s in enumerate(r.settings) if s == run_setting(r)), len(r.settings)) for r in runs}
    runs = sorted(runs, key=lambda r: order[id(r)])  # a sweep's settings in the order its config lists them
    varying = differing_keys(runs)
    labels = [setting_label(r, varying) for r in runs]
    if any(differing_keys([r for r, other in zip(runs, labels) if other == label]) for label in set(labels)):
        labels = [", ".join(f"{k.split('.')[-1]}={r.config.get(k)}" for k in varying) or "run" for r in runs]
    groups: dict[str, list[Run]] = {}
    for label, r in zip(labels, runs):
        groups.setdefault(label, []).append(r)
    return groups


def per_generation(runs: list[Run], key: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Generations, and for each the finite values of a metric over `runs` (its seeds)."""
    generations = sorted({row["generation"] for r in runs for row in r.rows})
    values = [_finite_values([row.get(key) for r in runs for row in r.rows if row["generation"] == g])
              for g in generations]
    return np.array(generations), values


def _finite_values(values: list[float | None]) -> np.ndarray:
    return np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN with one value): the paper's mean ± std over runs."""
    v = _finite_values(values)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def format_mean_std(mean: float, std: float) -> str:
    """A table cell: '12.34 ± 0.56' (3 decimals below 10; 3 significant digits from 10^4 on, '1.95e+09 ±
    7.41e+08'), '-' for no value, the mean alone for one seed."""
    if math.isnan(mean):
        return "-"
    form = ".3g" if abs(mean) >= 1e4 else ".2f" if abs(mean) >= 10 else ".3f"
    return f"{mean:{form}}" + ("" if math.isnan(std) else f" ± {std:{form}}")


def series(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generations, mean and standard deviation of a metric over the runs of one setting."""
    generations, values = per_generation(runs, key)
    stats_ = [mean_std(list(v)) for v in values]
    return generations, np.array([s[0] for s in stats_]), np.array([s[1] for s in stats_])


# ---------------------------------------------------------------------------------------------
# Generation 0's noise: the band every "did it move?" question reads.


def computed_rows(runs: list[Run], generation: int) -> list[dict]:
    """The rows of `generation` over `runs`, each computed generation once. A follower of a shared prefix
    repeats its leader's rows byte for byte, and a setting that differs only after generation 0 computes the
    same generation 0 as every other (the run is deterministic): counting such copies again would narrow
    the seed band."""
    seen: dict[str, dict] = {}
    for r in runs:
        for row in r.rows:
            if row["generation"] == generation:
                seen.setdefault(json.dumps(row, sort_keys=True), row)
    return list(seen.values())


def several_seeds(runs: list[Run]) -> bool:
    return len({r.config.get("run.seed") for r in runs}) >= 2


def seed_sigma(runs: list[Run], key: str) -> float:
    """The standard deviation (ddof 1) of a metric across generation 0's computed rows: the seed-to-seed
    noise (NaN with fewer than two values)."""
    return mean_std([row.get(key) for row in computed_rows(runs, 0)])[1]


def noise_band(runs: list[Run], rs: list[Run]) -> dict[str, float]:
    """The phase rule's band for the setting `rs` among `runs`: NOISE_SIGMAS x the seed-to-seed std of
    generation 0 across all runs; with a single seed, the run's own bootstrap band (`noise_*` of its
    generation-0 row)."""
    if several_seeds(runs):
        return phases.seed_band(computed_rows(runs, 0), NOISE_SIGMAS)
    return phases.row_band(rs[0].rows[0], NOISE_SIGMAS)


def setting_phases(rs: list[Run], band: dict[str, float]) -> tuple[list[int], list[str]]:
    """The generations of one setting and the phase of its mean over seeds at each."""
    columns = {k: series(rs, k) for k in phases.SIGNALS}
    generations = sorted({row["generation"] for r in rs for row in r.rows})
    mean_rows = [{"generation": g, **{k: float(m[list(gs).index(g)]) for k, (gs, m, _) in columns.items()
                                      if g in gs}} for g in generations]
    return generations, phases.phases(mean_rows, band)


def last_generation(runs: list[Run]) -> int:
    return max(row["generation"] for r in runs for row in r.rows)
