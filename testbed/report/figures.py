"""The report's figures over settings: metrics.png (every report metric against generation), headline.png
(the four a reader looks at first) and synthetic_ppl_gen0.png (the paper's histogram). Which metric is
drawn, and how, is the metric registry's."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from testbed.metrics.registry import HEADLINE, REPORT, Metric, shown_in
from testbed.report.plotting import (
    TITLE_WIDTH,
    figure,
    legend_below,
    metric_title,
    number_ticks,
    provenance,
    pyplot,
    save,
    setting_colors,
    titles,
)
from testbed.report.runs import Run, corpora, last_generation, mean_std, per_generation

MISSING = "×: no value at that generation (e.g. no grammatical sample to score)"


def present(view: str, runs: list[Run]) -> list[Metric]:
    """The metrics of `view` that some run recorded a value for, in registry order."""
    return [m for m in shown_in(view, corpora(runs)) if any(row.get(m.key) is not None for r in runs for row in r.rows)]


def metric_panel(ax, m: Metric, groups: dict[str, list[Run]], runs: list[Run], colors) -> bool:
    """One metric against generation: a line per setting (the mean over seeds), the seeds' range shaded
    (inside what the metric can take), human text dashed; perplexities on a log axis. A generation at which
    a setting has no finite value is marked × on the axis; returns whether any was."""
    from matplotlib.ticker import MaxNLocator

    marked = False
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
        gap = ~ok & (g > 0)  # generation 0 has no synthetic data: no value there is no gap
        if gap.any():
            ax.plot(g[gap], np.full(gap.sum(), 0.03), ls="none", marker="x", color=color,
                    transform=ax.get_xaxis_transform(), clip_on=False)
            marked = True
    human, _ = mean_std([r.baseline.get(m.key) for r in runs])
    if np.isfinite(human):
        ax.axhline(human, color="black", ls="--", lw=1, label="human text")
    if m.log:
        ax.set_yscale("log")
    else:  # the axis, too, stays within what the metric can take (a flat line at 0 shows no negative shares)
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom if m.low is None else max(bottom, m.low), top if m.high is None else min(top, m.high))
    number_ticks(ax.yaxis)
    ax.set_title(textwrap.fill(metric_title(m), TITLE_WIDTH), fontsize=9)
    ax.set_xlabel("generation", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(m.unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return marked


def constant(m: Metric, runs: list[Run]) -> bool:
    """Whether every value of the metric, in every run and generation, is the same (a panel would be one flat
    line on its axis)."""
    values = {row.get(m.key) for r in runs for row in r.rows} - {None}
    return len(values) == 1


def indistinct(m: Metric, groups: dict[str, list[Run]]) -> bool:
    """Whether, at every generation after 0, the seeds' ranges of all settings share a value: the settings'
    bands lie over each other, and a panel would show nothing that tells them apart. False for one setting
    or one seed."""
    if len(groups) < 2 or max(len(rs) for rs in groups.values()) < 2:
        return False
    ranges: dict[int, list[tuple[float, float]]] = {}
    for rs in groups.values():
        g, values = per_generation(rs, m.key)
        for gen, v in zip(g.tolist(), values):
            if gen > 0 and len(v):
                ranges.setdefault(gen, []).append((v.min(), v.max()))
    return bool(ranges) and all(max(lo for lo, _ in rr) <= min(hi for _, hi in rr) for rr in ranges.values())


def grid_figure(metrics: list[Metric], groups: dict[str, list[Run]], runs: list[Run], cols: int, title: str,
                path: Path, notes: tuple[str, ...] = ()) -> Path:
    """A grid of metric panels under a title and a subtitle (what produced it, then `notes`), with one legend
    below it, in a band of the figure sized so that no entry is cut."""
    nrows = -(-len(metrics) // cols)
    fig, axes = figure(nrows, cols, (4.3, 3.3))
    marked = [metric_panel(ax, m, groups, runs, setting_colors(len(groups))) for ax, m in zip(axes.flat, metrics)]
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    legend_in = legend_below(fig, axes, 9)
    seeds = max(len(rs) for rs in groups.values())
    lines = [provenance(runs) + (f"; mean over {seeds} seeds, shaded: lowest to highest seed" if seeds > 1 else ""),
             *notes, *([MISSING] if any(marked) else [])]
    top_in = titles(fig, title, lines)
    height = fig.get_figheight()
    # Fixed margins (tight_layout, or saving with bbox_inches="tight", measures every label: seconds).
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - (top_in + 0.35) / height, bottom=(0.6 + legend_in) / height,
                        hspace=0.75 if any(len(metric_title(m)) > TITLE_WIDTH for m in metrics) else 0.5,
                        wspace=0.32)
    return save(fig, path)


def plot_metrics(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> Path:
    """metrics.png: every metric of the report against generation, but for those a panel cannot show: one
    value throughout, or settings whose seed ranges overlap at every generation (report.md has them all)."""
    metrics = present(REPORT, runs)
    flat = [m for m in metrics if constant(m, runs)]
    overlapping = [m for m in metrics if m not in flat and indistinct(m, groups)]
    shown = [m for m in metrics if m not in flat and m not in overlapping]
    notes = ([f"Not drawn, one value throughout: {', '.join(m.title for m in flat)}."] if flat else []) + \
        ([f"Not drawn, every setting within the others' seed range at every generation: "
          f"{', '.join(m.title for m in overlapping)} (tables in report.md)."] if overlapping else [])
    return grid_figure(shown or metrics, groups, runs, 4, "Model collapse across generations", out / "metrics.png",
                       tuple(notes))


def plot_headline(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> Path:
    """headline.png: the four metrics a reader looks at first."""
    return grid_figure(present(HEADLINE, runs), groups, runs, 2, "Model collapse: the headline metrics",
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


def _log_density(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """A histogram as density per decade: its area over a log axis is 1."""
    counts, _ = np.histogram(values, bins=edges)
    return counts / (len(values) * np.diff(np.log10(edges)))


def plot_perplexity_histograms(groups: dict[str, list[Run]], out: Path) -> Path:
    """The paper's figure: the density of per-sequence perplexities, under the generation-0 model, of the
    data each model k produced (gen_{k+1}/synthetic; as in the paper, labelled by the producing model),
    human text dashed, one panel per setting with its seeds pooled, one x-range and one set of bins for all
    panels. Densities are per decade of perplexity, so that areas on the log axis are shares."""
    runs = [r for rs in groups.values() for r in rs]
    last = last_generation(runs)
    data = {label: {g: np.concatenate([_synthetic_ppl(r, g) for r in rs]) for g in range(1, last_generation(rs) + 1)}
            for label, rs in groups.items()}
    human = {label: np.concatenate([np.asarray(r.baseline.get("ppl_gen0_per_sequence") or [], dtype=float)
                                    for r in rs]) for label, rs in groups.items()}
    human = {label: v[np.isfinite(v)] for label, v in human.items()}
    pooled = np.concatenate([v for d in data.values() for v in d.values()] + list(human.values()))
    cols = min(4, len(groups))
    fig, axes = figure(-(-len(groups) // cols), cols, (4.5, 3.6), sharex=True, sharey=True)
    colors = pyplot().cm.viridis(np.linspace(0, 0.9, max(last, 1)))  # one colour per producing model, in every panel
    edges = np.geomspace(max(pooled.min(), 1.0), pooled.max() * 1.01, 40) if len(pooled) else None
    for ax, label in zip(axes.flat, groups):
        if edges is None:
            break
        for g, values in data[label].items():
            if len(values):
                ax.stairs(_log_density(values, edges), edges, lw=1.4, color=colors[g - 1],
                          label=f"data of model {g - 1}")
        if len(human[label]):
            ax.stairs(_log_density(human[label], edges), edges, lw=1.6, ls="--", color="black", label="human text")
        ax.set_xscale("log")
        number_ticks(ax.xaxis)
        number_ticks(ax.yaxis)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("perplexity under the generation-0 model", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("density per decade", fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    legend_in = legend_below(fig, axes, 8)
    seeds = max(len(rs) for rs in groups.values())
    top_in = titles(fig, "Per-sequence perplexity, under the generation-0 model, of the data each model produced",
                    [provenance(runs) + ("; seeds pooled in each panel" if seeds > 1 else "")])
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - (top_in + 0.25) / height, bottom=(0.6 + legend_in) / height,
                        wspace=0.08, hspace=0.45)
    return save(fig, out / "synthetic_ppl_gen0.png")
