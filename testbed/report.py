"""Human-readable results: the terminal table of a run, and `testbed report` (markdown + PNG plots) over
runs and sweeps. Runs that differ only in `run.seed` are one setting; tables give the mean ± standard
deviation over seeds, plots the mean and the seeds' range. Which metric appears where, and how, is
testbed/metrics/registry.py."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from testbed import phases
from testbed.config import flatten
from testbed.metrics.registry import CURATION, HEADLINE, REPORT, SIGNAL, SUMMARY, TERMINAL, Metric, shown_in
from testbed.rundir import RunDirError, read_jsonl

# Where a run lives and what it took from another run are not what it is (run.gen0_from: runs made before
# shared prefixes generalised it).
IGNORED_KEYS = {"run.name", "run.out_dir", "run.seed", "run.prefix_from", "run.prefix_until", "run.gen0_from"}
NOISE_SIGMAS = phases.NOISE_SIGMAS  # the early-warning table and the phases: a signal moved when it left the band


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def format_table(rows: list[dict], baseline: dict | None = None) -> str:
    """A fixed-width table, one row per generation, the human baseline first (ppl_human does not apply)."""
    columns = [("generation", "gen", "{}")] + [(m.key, m.header or m.key, m.fmt) for m in shown_in(TERMINAL)
                                                 if any(m.key in r for r in rows)]
    zero_shot = [{"generation": "base", "ppl_human": r["ppl_human_zero_shot"]} for r in rows[:1]
                 if r.get("ppl_human_zero_shot") is not None]  # the base model before training
    body = ([{**baseline, "ppl_human": None}] if baseline else []) + zero_shot + rows
    cells = [[header for _, header, _ in columns]]
    cells += [[_cell(r.get(key), fmt) for key, _, fmt in columns] for r in body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Loading runs and grouping them into settings.


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
    return Run(path, flatten(cfg), rows, baseline, list(sweep.get("settings") or []))


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


def differing_keys(runs: list[Run]) -> list[str]:
    keys = sorted(set().union(*(r.config for r in runs)) - IGNORED_KEYS)
    return [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def _same(a, b) -> bool:
    return a == b or str(a).lower() == str(b).lower()  # a sweep setting's 0.5 or true against the run's value


def run_setting(run: Run) -> dict:
    """The sweep setting the run belongs to: the most specific of its sweep's settings whose values it has
    ({} when none does, or the run is not a sweep's)."""
    matches = [s for s in run.settings if all(_same(run.config.get(k), v) for k, v in s.items() if k != "name")]
    return max(matches, key=len, default={})


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


def series(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generations, mean and standard deviation of a metric over the runs of one setting."""
    generations, values = per_generation(runs, key)
    stats_ = [mean_std(list(v)) for v in values]
    return generations, np.array([s[0] for s in stats_]), np.array([s[1] for s in stats_])


# ---------------------------------------------------------------------------------------------
# Markdown.


def _fmt(mean: float, ci: float) -> str:
    if math.isnan(mean):
        return "-"
    digits = 2 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f}" + ("" if math.isnan(ci) else f" ± {ci:.{digits}f}")


def present(view: str, runs: list[Run]) -> list[Metric]:
    """The metrics of `view` that some run recorded a value for, in registry order."""
    return [m for m in shown_in(view) if any(row.get(m.key) is not None for r in runs for row in r.rows)]


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
    last = max(row["generation"] for r in runs for row in r.rows)
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
              + recovery_table(groups, runs))
    for m in present(REPORT, runs):
        arrow = _title(m).removeprefix(m.title)
        lines += ["", f"## {m.title}", "", f"`{m.key}`, {m.unit}{arrow}.", "",
                  "| generation | " + " | ".join(groups) + " | human |", "|---|" + "---|" * (len(groups) + 1)]
        by_setting = {label: series(rs, m.key) for label, rs in groups.items()}
        human = mean_std([r.baseline.get(m.key) for r in runs])
        for i, g in enumerate(by_setting[next(iter(groups))][0]):
            cells = [_fmt(by_setting[label][1][i], by_setting[label][2][i]) if i < len(by_setting[label][0])
                     else "-" for label in groups]
            lines.append(f"| {g} | " + " | ".join(cells) + f" | {_fmt(*human) if i == 0 else ''} |")
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
    if len({r.config.get("run.seed") for r in runs}) < 2:
        return ["", "## Which signal moves first", "", "Needs runs with at least two seeds (the noise of "
                "generation 0 is their spread)."]
    signals = [m.key for m in present(SIGNAL, runs)]
    sigma = {k: mean_std([row.get(k) for r in runs for row in r.rows if row["generation"] == 0])[1] for k in signals}
    table = {k: {label: first_moved(rs, k, sigma[k]) for label, rs in groups.items()} for k in signals}
    last = max(row["generation"] for r in runs for row in r.rows)
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


def setting_phases(rs: list[Run], band: dict[str, float]) -> tuple[list[int], list[str]]:
    """The generations of one setting and the phase of its mean over seeds at each."""
    columns = {k: series(rs, k) for k in phases.SIGNALS}
    generations = sorted({row["generation"] for r in rs for row in r.rows})
    mean_rows = [{"generation": g, **{k: float(m[list(gs).index(g)]) for k, (gs, m, _) in columns.items()
                                      if g in gs}} for g in generations]
    return generations, phases.phases(mean_rows, band)


def phase_table(groups: dict[str, list[Run]], runs: list[Run]) -> list[str]:
    """Markdown: per setting, the phase (testbed/phases.py) of the mean over seeds at each generation, and the
    first generation of the early and the late phase. The band is the early-warning table's: NOISE_SIGMAS
    standard deviations of generation 0 across all runs and seeds; with a single seed, each run's own
    bootstrap band (`noise_*` of its generation-0 row)."""
    if not any(k in row for r in runs for row in r.rows for k in phases.SIGNALS):
        return []
    several = len({r.config.get("run.seed") for r in runs}) >= 2
    band = phases.seed_band([row for r in runs for row in r.rows if row["generation"] == 0], NOISE_SIGMAS) \
        if several else None
    lines = ["", "## Phases: early (tails lost) and late (head and variance too)", "",
             f"Rule (testbed/phases.py): a signal has left the band when it moved from generation 0 by more than "
             f"{NOISE_SIGMAS:g} σ in the direction of damage; **late** when a head signal "
             f"({', '.join(f'`{k}`' for k in phases.HEAD)}) and a variance signal "
             f"({', '.join(f'`{k}`' for k in phases.VARIANCE)}) have; **early** when a tail signal "
             f"({', '.join(f'`{k}`' for k in phases.TAIL)}) has and it is not late. σ: "
             + ("generation 0's spread across seeds (the early-warning table's)." if several else
                "the bootstrap std of generation 0's metrics over its samples and test blocks (one seed)."),
             "Phases of the mean over seeds (of the run itself with one seed); `-`: not reached.", "",
             "| setting | first early | first late | phase by generation (0, 1, ...) |", "|---|---|---|---|"]
    for label, rs in groups.items():
        generations, labels = setting_phases(rs, band if several else phases.row_band(rs[0].rows[0]))
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


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, headless).


def recovery_table(groups: dict[str, list[Run]], runs: list[Run]) -> list[str]:
    """The recovery table (testbed/recovery.py), when there are recovery runs."""
    from testbed import recovery

    return recovery.recovery_table(groups, runs)


def recovery_plots(groups: dict[str, list[Run]], out: Path) -> list[Path]:
    """recovery.png (testbed/recovery.py), when there are recovery runs."""
    from testbed import recovery

    return [p for p in [recovery.plot_recovery(groups, out)] if p is not None]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


TITLE_WIDTH = 52  # characters of a panel's title per line


def _title(m: Metric) -> str:
    return m.title + {True: " (higher is better)", False: " (lower is better)", None: ""}[m.higher_is_better]


def _panel(ax, m: Metric, groups: dict[str, list[Run]], runs: list[Run], colors) -> None:
    """One metric against generation: a line per setting (the mean over seeds), the seeds' range shaded
    (inside what the metric can take), human text dashed; perplexities on a log axis."""
    from matplotlib.ticker import MaxNLocator

    for color, (label, rs) in zip(colors, groups.items()):
        g, values = per_generation(rs, m.key)
        ok = np.array([len(v) > 0 for v in values], dtype=bool)
        if not ok.any():
            continue
        mean = np.array([v.mean() for v, good in zip(values, ok) if good])
        ax.plot(g[ok], mean, marker="o", ms=3, color=color, label=label)
        if max(len(v) for v in values) > 1:
            low = m.clip(np.array([v.min() for v, good in zip(values, ok) if good]))
            high = m.clip(np.array([v.max() for v, good in zip(values, ok) if good]))
            ax.fill_between(g[ok], low, high, color=color, alpha=0.18, lw=0)
    human, _ = mean_std([r.baseline.get(m.key) for r in runs])
    if np.isfinite(human):
        ax.axhline(human, color="black", ls="--", lw=1, label="human text")
    if m.log:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    else:  # the axis, too, stays within what the metric can take (a flat line at 0 shows no negative shares)
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom if m.low is None else max(bottom, m.low), top if m.high is None else min(top, m.high))
    ax.set_title(textwrap.fill(_title(m), TITLE_WIDTH), fontsize=9)
    ax.set_xlabel("generation", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(m.unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _legend(fig, axes, fontsize: int) -> float:
    """One legend below the axes for every entry of every panel (only some have the human line), human
    text last, in as many columns as fit the figure's width. The figure grows by the legend's height, which
    is returned (inches), so that the caller leaves it that much room at the bottom."""
    entries = {}
    for ax in axes.flat:
        entries.update(zip(*reversed(ax.get_legend_handles_labels())))
    if "human text" in entries:
        entries["human text"] = entries.pop("human text")
    # Generous sizes in inches (a handle and its padding; a character), so that no entry can be cut.
    width_in = 0.7 + 0.0095 * fontsize * max(map(len, entries), default=1)
    ncol = max(1, min(len(entries), int(fig.get_figwidth() // width_in)))
    height_in = 0.2 + math.ceil(len(entries) / ncol) * fontsize * 1.5 / 72
    fig.set_figheight(fig.get_figheight() + height_in)
    fig.legend(list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               fontsize=fontsize, frameon=False)
    return height_in


def _plain_log_ticks(axis) -> None:
    """A log axis (its data already drawn) with ticks written as plain numbers: at 1, 2, 5 x 10^k over up
    to two decades, at the powers of 10 beyond (their labels would collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = axis.get_view_interval()
    decades = math.log10(high / low) if low > 0 and high > low else 0.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _grid_figure(metrics: list[Metric], groups: dict[str, list[Run]], runs: list[Run], cols: int, title: str,
                 path: Path) -> Path:
    """A grid of metric panels with one legend below it, in a band of the figure sized so that no entry is
    cut."""
    plt = _pyplot()
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 3.3 * nrows), squeeze=False)
    colors = plt.cm.tab10(np.arange(len(groups)) % 10) if len(groups) <= 10 else \
        plt.cm.tab20(np.arange(len(groups)) % 20)
    for ax, m in zip(axes.flat, metrics):
        _panel(ax, m, groups, runs, colors)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    legend_in = _legend(fig, axes, 9)
    seeds = max(len(rs) for rs in groups.values())
    fig.suptitle(title + (f" (mean over {seeds} seeds; shaded: lowest to highest seed)" if seeds > 1 else ""))
    # Fixed margins (tight_layout, or saving with bbox_inches="tight", measures every label: seconds).
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 1.0 / height, bottom=(0.6 + legend_in) / height,
                        hspace=0.75 if any(len(_title(m)) > TITLE_WIDTH for m in metrics) else 0.5, wspace=0.32)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metrics(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> Path:
    """metrics.png: every metric of the report against generation."""
    return _grid_figure(present(REPORT, runs), groups, runs, 4, "Model collapse across generations",
                        out / "metrics.png")


def plot_headline(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> Path:
    """headline.png: the four metrics a reader looks at first."""
    return _grid_figure(present(HEADLINE, runs), groups, runs, 2, "Model collapse: the headline metrics",
                        out / "headline.png")


def _synthetic_ppl(run: Run, generation: int) -> np.ndarray:
    """The ppl_gen0 column of a generation's synthetic set (memory-mapped Arrow: no row is parsed)."""
    path = run.path / f"gen_{generation:03d}" / "synthetic"
    if not path.is_dir():
        return np.zeros(0)
    import datasets

    values = datasets.load_from_disk(str(path)).with_format("numpy")["ppl_gen0"][:]
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def plot_perplexity_histograms(groups: dict[str, list[Run]], out: Path) -> Path:
    """The paper's figure: the density of per-sequence perplexities, under the generation-0 model, of the
    data each model k produced (gen_{k+1}/synthetic; as in the paper, labelled by the producing model),
    human text dashed, one panel per setting."""
    plt = _pyplot()
    cols = min(4, len(groups))
    nrows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.6 * nrows), squeeze=False, sharey=True)
    most = max(row["generation"] for rs in groups.values() for r in rs for row in r.rows)
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(most, 1)))  # one colour per producing model, in every panel
    for ax, (label, rs) in zip(axes.flat, groups.items()):
        last = max(row["generation"] for r in rs for row in r.rows)
        data = {g: np.concatenate([_synthetic_ppl(r, g) for r in rs]) for g in range(1, last + 1)}
        human = np.concatenate([np.asarray(r.baseline.get("ppl_gen0_per_sequence") or [], dtype=float) for r in rs])
        human = human[np.isfinite(human)]
        pooled = np.concatenate([*data.values(), human])
        if not len(pooled):
            continue
        bins = np.geomspace(max(pooled.min(), 1.0), pooled.max() * 1.01, 40)
        for g, values in data.items():
            color = colors[g - 1]
            if len(values):
                ax.hist(values, bins=bins, density=True, histtype="step", lw=1.4, color=color,
                        label=f"data of model {g - 1}")
        if len(human):
            ax.hist(human, bins=bins, density=True, histtype="step", lw=1.6, ls="--", color="black",
                    label="human text")
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("perplexity under the generation-0 model")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    legend_in = _legend(fig, axes, 8)
    fig.suptitle("Per-sequence perplexity, under the generation-0 model, of the data each model produced")
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.7 / height, bottom=(0.6 + legend_in) / height,
                        wspace=0.08, hspace=0.45)
    path = out / "synthetic_ppl_gen0.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(paths: list[Path], out: Path | None = None) -> list[Path]:
    """report.md and PNG plots for the runs found under `paths`, written to `out` (default: the one
    directory given, or the parent of the first)."""
    runs = find_runs(paths)
    out = out or (paths[0] if len(paths) == 1 else paths[0].parent)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_settings(runs)
    md = out / "report.md"
    md.write_text(markdown(groups, runs), encoding="utf-8")
    return [md, plot_headline(groups, runs, out), plot_metrics(groups, runs, out),
            plot_perplexity_histograms(groups, out), *recovery_plots(groups, out), *collapse_by_size(runs, out)]


# ---------------------------------------------------------------------------------------------
# Collapse by model size (issue 18): runs that differ in model, with the size on the x-axis.

_MODEL_KEYS = ("model.name_or_path", "model.arch", "model.layers", "model.width", "model.heads")


def model_parameters(run: Run) -> int | None:
    """Parameters of a run's generation-0 checkpoint (always kept), read from its safetensors headers."""
    from safetensors import safe_open

    files = sorted((run.path / "gen_000" / "model").glob("*.safetensors"))
    total = 0
    for f in files:
        with safe_open(str(f), "pt") as h:
            total += sum(math.prod(h.get_slice(k).get_shape()) for k in h.keys())  # noqa: SIM118
    return total or None


def _model_name(run: Run) -> str:
    name = run.config.get("model.name_or_path")
    if name:
        return str(name).rstrip("/").rsplit("/", 1)[-1]
    c = run.config
    return f"{c.get('model.arch')} {c.get('model.layers')}x{c.get('model.width')}"


def collapse_by_size(runs: list[Run], out: Path) -> list[Path]:
    """When the runs differ in model size: collapse_by_size.md and .png, perplexity on human text at generation
    0 and at the last generation, and their ratio (how much the model lost), against the parameter count, a
    line per setting (mean ± std over seeds). Nothing when every run has the same size."""
    differing = differing_keys(runs)
    if not any(k in differing for k in _MODEL_KEYS):
        return []

    def model_id(r: Run) -> tuple:
        return tuple(r.config.get(k) for k in _MODEL_KEYS)

    # One size per model: a BPE trained per run gives each seed a slightly different embedding.
    counts: dict[tuple, list[int]] = {}
    for r in runs:
        if n := model_parameters(r):
            counts.setdefault(model_id(r), []).append(n)
    size = {m: int(np.median(ns)) for m, ns in counts.items()}
    if len(set(size.values())) < 2:
        return []
    varying = [k for k in differing if k not in _MODEL_KEYS]
    by_setting: dict[str, dict[int, list[Run]]] = {}
    names: dict[int, str] = {}
    for r in runs:
        if (n := size.get(model_id(r))) is not None:
            by_setting.setdefault(setting_label(r, varying), {}).setdefault(n, []).append(r)
            names[n] = _model_name(r)
    last = max(row["generation"] for r in runs for row in r.rows)

    def at(rs: list[Run], g: int) -> list[float | None]:
        return [next((row.get("ppl_human") for row in r.rows if row["generation"] == g), None) for r in rs]

    def ratio(rs: list[Run]) -> list[float | None]:
        return [b / a if a and b else None for a, b in zip(at(rs, 0), at(rs, last))]

    lines = ["# Collapse by model size", "", f"Perplexity on human test text (`ppl_human`) at generation 0 → {last}, "
             "and its ratio (last / generation 0): mean ± std over seeds.", "",
             "| model | parameters | " + " | ".join(f"{s}: ppl 0 → {last} | {s}: ratio" for s in by_setting) + " |",
             "|---|---|" + "---|---|" * len(by_setting)]
    for n in sorted(names):
        cells = []
        for per_size in by_setting.values():
            rs = per_size.get(n, [])
            cells += [f"{_fmt(*mean_std(at(rs, 0)))} → {_fmt(*mean_std(at(rs, last)))}", _fmt(*mean_std(ratio(rs)))]
        lines.append(f"| {names[n]} | {n:,} | " + " | ".join(cells) + " |")
    md = out / "collapse_by_size.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")

    from matplotlib.ticker import FormatStrFormatter

    plt = _pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, per_size in by_setting.items():
        n = np.array(sorted(per_size), dtype=float)
        for ax, values in zip(axes, ([at(per_size[k], last) for k in sorted(per_size)],
                                     [ratio(per_size[k]) for k in sorted(per_size)])):
            mean, std = np.array([mean_std(v) for v in values]).T
            ax.errorbar(n, mean, yerr=np.where(np.isfinite(std), std, 0), marker="o", capsize=3, label=label)
    for n, name in names.items():
        axes[0].annotate(name, (n, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                         textcoords="offset points", ha="center", va="bottom", fontsize=7, color="gray")
    axes[0].set_yscale("log")  # perplexity; the ratio stays linear (near 1 when little is lost)
    for set_formatter in (axes[0].yaxis.set_major_formatter, axes[0].yaxis.set_minor_formatter):
        set_formatter(FormatStrFormatter("%.4g"))
    for ax, title in zip(axes, (f"Perplexity on human text at generation {last}",
                                f"Perplexity ratio, generation {last} / generation 0")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("perplexity")
    axes[1].set_ylabel("ratio (1: no loss)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Collapse by model size")
    fig.subplots_adjust(left=0.09, right=0.98, top=0.83, bottom=0.15, wspace=0.3)
    png = out / "collapse_by_size.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [md, png]
