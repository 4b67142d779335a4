"""Human-readable results: the terminal table of a run, and `testbed report` over runs and sweeps:
report.md (its tables live here) and the figures of figures.py, recovery.py and size.py. Runs that differ
only in `run.seed` are one setting (testbed/runs.py); tables give the mean ± standard deviation over seeds,
plots the mean and the seeds' range. Which metric appears where, and how, is testbed/metrics/registry.py."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from testbed.metrics import phases
from testbed.metrics.registry import CURATION, REPORT, SIGNAL, SUMMARY, TERMINAL, shown_in
from testbed.report.figures import plot_headline, plot_metrics, plot_perplexity_histograms, present
from testbed.report.plotting import metric_title
from testbed.report.recovery import out_of_domain_table, plot_out_of_domain, plot_recovery, recovery_table
from testbed.report.runs import (
    NOISE_SIGMAS,
    Run,
    differing_keys,
    find_runs,
    format_mean_std,
    group_settings,
    last_generation,
    mean_std,
    noise_band,
    seed_sigma,
    series,
    setting_phases,
    several_seeds,
)
from testbed.report.size import collapse_by_size


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def format_table(rows: list[dict], baseline: dict | None = None, corpora: Iterable[str] = ()) -> str:
    """A fixed-width table, one row per generation, the human baseline first (ppl_human does not apply), then
    the base model before training (its zero-shot values); `corpora`: the eval.corpora names."""
    columns = [("generation", "gen", "{}")] + [(m.key, m.header or m.key, m.fmt) for m in shown_in(TERMINAL, corpora)
                                                 if any(m.key in r for r in rows)]
    zero_shot = [{"generation": "base", **{k.removesuffix("_zero_shot"): v for k, v in r.items()
                                           if k.endswith("_zero_shot")}}
                 for r in rows[:1] if r.get("ppl_human_zero_shot") is not None]
    body = ([{**baseline, "ppl_human": None}] if baseline else []) + zero_shot + rows
    cells = [[header for _, header, _ in columns]]
    cells += [[_cell(r.get(key), fmt) for key, _, fmt in columns] for r in body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Markdown.


def markdown(groups: dict[str, list[Run]], runs: list[Run]) -> str:
    keys = differing_keys(runs)
    seeds = sorted({r.config.get("run.seed") for r in runs})
    lines = ["# Model-collapse report", "",
             f"{len(runs)} runs, {len(groups)} settings, seeds {seeds}. Cells: mean ± standard deviation over "
             "seeds (the plots shade the seeds' range, lowest to highest).", "", "## Settings", "",
             "| setting | runs | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for label, rs in groups.items():
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(str(rs[0].config.get(k)) for k in keys) + " |")
    summary = present(SUMMARY, runs)
    last = last_generation(runs)
    lines += ["", f"## Summary: mean at the first → last generation (0 → {last})", "",
              "| setting | " + " | ".join(f"`{m.key}`" for m in summary) + " |", "|---|" + "---|" * len(summary)]
    for label, rs in groups.items():
        cells = []
        for m in summary:
            _, mean, _ = series(rs, m.key)
            finite = mean[np.isfinite(mean)]
            cells.append(f"{finite[0]:.3g} → {finite[-1]:.3g}" if len(finite) else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += (early_warning(groups, runs) + phase_table(groups, runs) + curation_table(groups)
              + recovery_table(groups, runs) + out_of_domain_table(groups, runs))
    for m in present(REPORT, runs):
        arrow = metric_title(m).removeprefix(m.title)
        lines += ["", f"## {m.title}", "", f"`{m.key}`, {m.unit}{arrow}.", "",
                  "| generation | " + " | ".join(groups) + " | human |", "|---|" + "---|" * (len(groups) + 1)]
        by_setting = {label: series(rs, m.key) for label, rs in groups.items()}
        human = mean_std([r.baseline.get(m.key) for r in runs])
        for i, g in enumerate(by_setting[next(iter(groups))][0]):
            cells = [format_mean_std(by_setting[label][1][i], by_setting[label][2][i]) if i < len(by_setting[label][0])
                     else "-" for label in groups]
            lines.append(f"| {g} | " + " | ".join(cells) + f" | {format_mean_std(*human) if i == 0 else ''} |")
    return "\n".join(lines) + "\n"


def first_moved(runs: list[Run], key: str, sigma0: float) -> int | None:
    """The first generation g >= 1 whose mean over `runs` differs from generation 0's mean by more than
    NOISE_SIGMAS x sigma0 (sigma0: the seed-to-seed std at generation 0); None if none does."""
    g, mean, _ = series(runs, key)
    if not len(g) or g[0] != 0 or not np.isfinite(mean[0]) or not np.isfinite(sigma0):
        return None
    moved = [int(gen) for gen, m in zip(g[1:], mean[1:]) if np.isfinite(m) and abs(m - mean[0]) > NOISE_SIGMAS * sigma0]
    return moved[0] if moved else None


def early_warning(groups: dict[str, list[Run]], runs: list[Run]) -> list[str]:
    """Markdown: for each signal and setting, the first generation at which it left the seed-to-seed noise
    of generation 0; the signals ordered by how early they move on average."""
    if not several_seeds(runs):
        return ["", "## Which signal moves first", "", "Needs runs with at least two seeds (the noise of "
                "generation 0 is their spread)."]
    signals = [m.key for m in present(SIGNAL, runs)]
    sigma = {k: seed_sigma(runs, k) for k in signals}
    table = {k: {label: first_moved(rs, k, sigma[k]) for label, rs in groups.items()} for k in signals}
    last = last_generation(runs)
    order = sorted(signals, key=lambda k: np.mean([v if v is not None else last + 1 for v in table[k].values()]))
    lines = ["", "## Which signal moves first", "",
             f"First generation at which the mean over seeds differs from generation 0's by more than "
             f"{NOISE_SIGMAS:g} standard deviations of generation 0 across all runs and seeds (the seed-to-seed "
             "noise); `-`: not by the last generation. Signals ordered by how early they move.", "",
             "| signal | σ at generation 0 | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
    for k in order:
        cells = [str(v) if v is not None else "-" for v in table[k].values()]
        lines.append(f"| `{k}` | {sigma[k]:.3g} | " + " | ".join(cells) + " |")
    return lines


def phase_table(groups: dict[str, list[Run]], runs: list[Run]) -> list[str]:
    """Markdown: per setting, the phase (testbed/metrics/phases.py) of the mean over seeds at each generation, and the
    first generation of the early and the late phase. The band is the early-warning table's: NOISE_SIGMAS
    standard deviations of generation 0 across all runs and seeds; with a single seed, each run's own
    bootstrap band (`noise_*` of its generation-0 row)."""
    if not any(k in row for r in runs for row in r.rows for k in phases.SIGNALS):
        return []
    several = several_seeds(runs)
    lines = ["", "## Phases: early (tails lost) and late (head and variance too)", "",
             f"Rule (testbed/metrics/phases.py): a signal has left the band when it moved from generation 0 by more "
             f"than "
             f"{NOISE_SIGMAS:g} σ in the direction of damage; **late** when a head signal "
             f"({', '.join(f'`{k}`' for k in phases.HEAD)}) and a variance signal "
             f"({', '.join(f'`{k}`' for k in phases.VARIANCE)}) have; **early** when a tail signal "
             f"({', '.join(f'`{k}`' for k in phases.TAIL)}) has and it is not late. σ: "
             + ("generation 0's spread across seeds (the early-warning table's)." if several else
                "the bootstrap std of generation 0's metrics over its samples and test blocks (one seed)."),
             "Phases of the mean over seeds (of the run itself with one seed); `-`: not reached.", "",
             "| setting | first early | first late | phase by generation (0, 1, ...) |", "|---|---|---|---|"]
    for label, rs in groups.items():
        generations, labels = setting_phases(rs, noise_band(runs, rs))
        first = phases.first_generations(generations, labels)
        cells = [str(first[p]) if first[p] is not None else "-" for p in ("early", "late")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {' '.join(labels)} |")
    return lines


def curation_table(groups: dict[str, list[Run]]) -> list[str]:
    """Markdown: what curation and screening kept and dropped, per setting (means over generations >= 1)."""
    rows = [row for rs in groups.values() for r in rs for row in r.rows]
    curated = any(row.get("detector_tpr") is not None or any(row.get(f"synthetic_dropped_{f}") for f in
                                                             ("dedup", "verifier", "perplexity")) for row in rows)
    keys = [(m.key, m.header) for m in present(CURATION, [r for rs in groups.values() for r in rs])]
    if not curated:
        return []
    lines = ["", "## Curation: what was kept and dropped", "",
             "Means over seeds and generations 1 and later: examples per generation, rates as shares.", "",
             "| setting | " + " | ".join(h for _, h in keys) + " |", "|---|" + "---|" * len(keys)]
    for label, rs in groups.items():
        cells = []
        for k, _ in keys:
            mean, _ = mean_std([row.get(k) for r in rs for row in r.rows if row["generation"] >= 1])
            cells.append("-" if math.isnan(mean) else f"{mean:.3g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_report(paths: list[Path], out: Path | None = None) -> list[Path]:
    """report.md and PNG plots for the runs found under `paths`, written to `out` (default: the one
    directory given, or the parent of the first)."""
    runs = find_runs(paths)
    out = out or (paths[0] if len(paths) == 1 else paths[0].parent)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_settings(runs)
    md = out / "report.md"
    md.write_text(markdown(groups, runs), encoding="utf-8")
    recovery = [p for p in (plot_recovery(groups, out), plot_out_of_domain(groups, runs, out)) if p]
    return [md, plot_headline(groups, runs, out), *plot_metrics(groups, runs, out),
            plot_perplexity_histograms(groups, out), *recovery, *collapse_by_size(runs, out)]
