"""The report's figures over settings: headline.png (the four metrics a reader looks at first),
metrics-<group>.png (every report metric against generation, a figure per group of the registry) and
synthetic_ppl_gen0.png (the paper's histogram). Which metric is drawn, in which figure and how, is the metric
registry's. More settings than a panel can tell apart are drawn a column of panels per family (the settings
that mix human and synthetic data alike), each column with the same references."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.config import Config, flatten
from testbed.metrics.registry import HEADLINE, REPORT, Metric, group_title, shown_in
from testbed.report.plotting import (
    FONT,
    figure,
    legend_below,
    legend_entries,
    legend_size,
    metric_title,
    number_ticks,
    place,
    provenance,
    pyplot,
    save,
    setting_styles,
    titles,
)
from testbed.report.recovery import is_human_control
from testbed.report.runs import Run, corpora, differing_keys, last_generation, mean_std, per_generation

MISSING = "×: no value at that generation (e.g. no grammatical sample to score)"
MAX_SERIES = 6  # settings one panel tells apart; more are split into families
MAX_FAMILIES = 4  # columns of panels that fit a page's width
REFERENCE_STYLES = ({"color": "black", "ls": "-", "marker": "x"}, {"color": "0.45", "ls": "-.", "marker": "+"})
PAGE_IN = 10.0  # a figure's widest, in inches at 110 dpi: about a page's width, where its fonts read as set


@dataclass
class Column:
    """A column of panels: the settings drawn in it, each in its own style, and the references drawn in
    every column (black and grey), under a title ('' for a figure of one column)."""

    title: str
    members: dict[str, list[Run]]
    references: dict[str, list[Run]]


def present(view: str, runs: list[Run]) -> list[Metric]:
    """The metrics of `view` that some run recorded a value for, in registry order."""
    return [m for m in shown_in(view, corpora(runs)) if any(row.get(m.key) is not None for r in runs for row in r.rows)]


def _mixing(config: dict) -> tuple:
    """How a setting mixes human and synthetic data: its family."""
    strategy = config.get("mixing.strategy")
    fraction = config.get("mixing.human_fraction") if strategy == "fixed_fraction" else None
    return strategy, fraction, bool(config.get("mixing.schedule"))


def _family_title(strategy: str, fraction, scheduled: bool) -> str:
    return (f"mixing: {strategy}" + ("" if fraction is None else f", {float(fraction):.0%} human")
            + (", then mixing.schedule" if scheduled else ""))


def no_defence(groups: dict[str, list[Run]]) -> str | None:
    """The setting that trains on its own samples with nothing else changed (replace, no schedule, the fewest
    of the varying keys away from their defaults): what every defence is measured against. None without one."""
    varying = differing_keys([r for rs in groups.values() for r in rs])
    defaults = flatten(Config().to_dict())
    candidates = [(sum(str(rs[0].config.get(k)) != str(defaults.get(k)) for k in varying), i, label)
                  for i, (label, rs) in enumerate(groups.items())
                  if rs[0].config.get("mixing.strategy") == "replace" and not rs[0].config.get("mixing.schedule")]
    return min(candidates)[2] if candidates else None


def columns(groups: dict[str, list[Run]]) -> list[Column]:
    """One column of every setting; or, for more settings than a panel tells apart, a column per family of
    settings that mix data alike (mixing.strategy, the human fraction, a schedule), each with the undefended
    replace setting and the human-only control as references (when the sweep has them)."""
    whole = [Column("", dict(groups), {})]
    if len(groups) <= MAX_SERIES:
        return whole
    reference = no_defence(groups)
    references = {label: rs for label, rs in groups.items() if label == reference or is_human_control(rs[0].config)}
    families: dict[tuple, dict[str, list[Run]]] = {}
    for label, rs in groups.items():
        if label not in references:
            families.setdefault(_mixing(rs[0].config), {})[label] = rs
    if not 2 <= len(families) <= MAX_FAMILIES:
        return whole
    return [Column(_family_title(*key), members, references) for key, members in families.items()]


def _series(ax, m: Metric, label: str, rs: list[Run], style: dict) -> bool:
    """One setting's mean over seeds against generation, the seeds' range shaded (inside what the metric can
    take); a generation without a finite value marked × on the axis. Returns whether any was."""
    g, values = per_generation(rs, m.key)
    ok = np.array([len(v) > 0 for v in values], dtype=bool)
    if not ok.any():
        return False
    ax.plot(g[ok], [v.mean() for v in values if len(v)], ms=3.5, lw=1.4, label=label, **style)
    if max(len(v) for v in values) > 1:
        low = m.clip(np.array([v.min() for v in values if len(v)]))
        high = m.clip(np.array([v.max() for v in values if len(v)]))
        ax.fill_between(g[ok], low, high, color=style["color"], alpha=0.15, lw=0)
    gap = ~ok & (g > 0)  # generation 0 has no synthetic data: no value there is no gap
    if gap.any():
        ax.plot(g[gap], np.full(gap.sum(), 0.03), ls="none", marker="x", color=style["color"],
                transform=ax.get_xaxis_transform(), clip_on=False)
    return bool(gap.any())


def metric_panel(ax, m: Metric, column: Column, runs: list[Run]) -> bool:
    """One metric against generation: a line per setting of the column (`setting_styles`), then the
    references, human text dashed; perplexities on a log axis. Returns whether a generation had no value."""
    from matplotlib.ticker import MaxNLocator

    if m.log:
        ax.set_yscale("log")
    marked = [_series(ax, m, label, rs, style)
              for (label, rs), style in zip(column.members.items(), setting_styles(len(column.members)))]
    human, _ = mean_std([r.baseline.get(m.key) for r in runs])
    if np.isfinite(human):
        ax.axhline(human, color="black", ls="--", lw=1, label="human text")
    fitted = ax.get_ylim()  # the column's settings and human text, which a reference far off must not squash
    marked += [_series(ax, m, f"{label} (reference)", rs, style)
               for (label, rs), style in zip(column.references.items(), REFERENCE_STYLES)]
    if column.members and column.references:
        ax.set_ylim(fitted)
    if not m.log:  # the axis, too, stays within what the metric can take (a flat line at 0 shows no negative shares)
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom if m.low is None else max(bottom, m.low), top if m.high is None else min(top, m.high))
    number_ticks(ax.yaxis)
    width, height = (ax.get_position().width * ax.figure.get_figwidth(),
                     ax.get_position().height * ax.figure.get_figheight())
    ax.set_title(textwrap.fill(metric_title(m), int(width * 13)), fontsize=FONT["title"])  # as grid_figure sizes it
    ax.set_xlabel("generation", fontsize=FONT["label"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(textwrap.fill(m.unit, int(height * 16)), fontsize=FONT["label"])
    ax.tick_params(labelsize=FONT["tick"])
    ax.grid(alpha=0.3)
    return any(marked)


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




def _has_gap(m: Metric, rs: list[Run]) -> bool:
    """Whether a setting has a generation after 0 without a finite value of the metric (while it has some)."""
    g, values = per_generation(rs, m.key)
    return any(len(v) for v in values) and any(not len(v) for gen, v in zip(g, values) if gen > 0)


def grid_figure(metrics: list[Metric], groups: dict[str, list[Run]], runs: list[Run], title: str,
                notes: tuple[str, ...] = ()):
    """A figure of metric panels under a title and a subtitle (what produced it, then `notes`), readable at a
    page's width. For one column of settings (`columns`): the panels in rows of two or three, one legend
    below; for families: a row per metric and a column per family, each under its title and its own legend."""
    cols = columns(groups)
    split = len(cols) > 1
    ncols = len(cols) if split else (2 if len(metrics) <= 4 else 3)
    nrows = len(metrics) if split else -(-len(metrics) // ncols)
    axes_w = min(3.6, (PAGE_IN - 0.9 - (ncols - 1) * 0.75) / ncols)  # 0.9: the margins left and right
    axes_h = min(2.5, 0.75 * axes_w)
    title_in = 0.17 * max(len(textwrap.wrap(metric_title(m), int(axes_w * 13))) for m in metrics)
    xlabel_in = 0.0 if split else 0.17  # families: generation is named under the bottom row only
    pad, gaps, bottom = 0.12 + title_in, (0.45 + xlabel_in + title_in, 0.75), 0.55
    width = 0.75 + 0.15 + ncols * axes_w + (ncols - 1) * gaps[1]

    def labels(c: Column) -> list[str]:
        return [*c.members, *(f"{r} (reference)" for r in c.references), "human text"]

    headers = [textwrap.fill(c.title, int(axes_w * 12)) for c in cols]
    header_in = 0.05 + 0.19 * max(h.count("\n") + 1 for h in headers)
    if split:  # a band above the panels: each column's title, then its legend
        legends = [legend_size(labels(c), axes_w + gaps[1], FONT["legend"]) for c in cols]
        band, below = header_in + max(h for _, h in legends), 0.0
    else:
        legends = [legend_size(labels(cols[0]), width, FONT["legend"])]
        band, below = 0.0, legends[0][1]
    fig, axes = pyplot().subplots(nrows, ncols, squeeze=False, figsize=(
        width, band + pad + nrows * axes_h + (nrows - 1) * gaps[0] + bottom + below))
    seeds = max(len(rs) for rs in groups.values())
    gap = any(_has_gap(m, rs) for m in metrics for rs in groups.values())
    top_in = titles(fig, title, [provenance(runs) + (f"; mean over {seeds} seeds, shaded: lowest to highest seed"
                                                     if seeds > 1 else ""), *notes, *([MISSING] if gap else [])])
    place(fig, nrows, ncols, top_in + band + pad, bottom + below, gaps)
    height = fig.get_figheight()
    if split:
        for c, (column, header, (ncol, _)) in enumerate(zip(cols, headers, legends)):
            for r, m in enumerate(metrics):
                metric_panel(axes[r, c], m, column, runs)
                if r < nrows - 1:
                    axes[r, c].set_xlabel("")
            box = axes[0, c].get_position()
            middle = (box.x0 + box.x1) / 2
            fig.text(middle, 1 - top_in / height, header, ha="center", va="top", fontsize=FONT["title"] + 0.5,
                     fontweight="bold")
            entries = legend_entries(axes[:, c])
            fig.legend(list(entries.values()), list(entries), loc="upper center", ncol=ncol, frameon=False,
                       bbox_to_anchor=(middle, 1 - (top_in + header_in) / height), fontsize=FONT["legend"])
    else:
        for ax, m in zip(axes.flat, metrics):
            metric_panel(ax, m, cols[0], runs)
        for ax in list(axes.flat)[len(metrics):]:
            ax.axis("off")
        entries = legend_entries(axes.flat)
        fig.legend(list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, 0.0),
                   ncol=legends[0][0], fontsize=FONT["legend"], frameon=False)
    return fig


def metric_figures(groups: dict[str, list[Run]], runs: list[Run]) -> dict:
    """Group -> its figure: every metric of the report against generation, a figure per group of the registry
    (Metric.group, in registry order), but for those a panel cannot show: one value throughout, or settings
    whose seed ranges overlap at every generation (report.md has them all; the figure's subtitle names them)."""
    by_group: dict[str, list[Metric]] = {}
    for m in present(REPORT, runs):
        by_group.setdefault(m.group, []).append(m)
    figs = {}
    for group, metrics in by_group.items():
        flat = [m for m in metrics if constant(m, runs)]
        overlapping = [m for m in metrics if m not in flat and indistinct(m, groups)]
        shown = [m for m in metrics if m not in flat and m not in overlapping]
        notes = ([f"Not drawn, one value throughout: {', '.join(m.title for m in flat)}."] if flat else []) + \
            ([f"Not drawn, every setting within the others' seed range at every generation: "
              f"{', '.join(m.title for m in overlapping)} (tables in report.md)."] if overlapping else [])
        figs[group] = grid_figure(shown or metrics, groups, runs, group_title(group), tuple(notes))
    return figs


def plot_metrics(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> list[Path]:
    """metrics-<group>.png: `metric_figures`."""
    return [save(fig, out / f"metrics-{group}.png") for group, fig in metric_figures(groups, runs).items()]


def plot_headline(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> Path:
    """headline.png: the four metrics a reader looks at first."""
    return save(grid_figure(present(HEADLINE, runs), groups, runs, "Model collapse: the headline metrics"),
                out / "headline.png")


QUANTILES = (0.005, 0.995)  # the histograms' x range: where the pooled values lie, not their extreme outliers


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
    """A histogram as density per decade, as a share of all `values` (those outside the edges too): its area
    over a log axis is the share of the values inside."""
    counts, _ = np.histogram(values, bins=edges)
    return counts / (len(values) * np.diff(np.log10(edges)))


def histogram_bins(series: list[np.ndarray], low: float, high: float) -> np.ndarray:
    """Log-spaced bin edges from `low` to `high`, as many as the Freedman–Diaconis rule gives the typical
    (median) histogram drawn, in log perplexity (10 to 50): narrow bins where each curve has the values."""
    counts = []
    for v in series:
        logs = np.log10(v[(v >= low) & (v <= high)])
        if len(logs) > 1 and (spread := np.subtract(*np.percentile(logs, [75, 25]))) > 0:
            counts.append(np.log10(high / low) / (2 * spread * len(logs) ** (-1 / 3)))
    return np.geomspace(low, high, round(float(np.clip(np.median(counts), 10, 50))) + 1 if counts else 31)


def histogram_range(pooled: np.ndarray) -> tuple[float, float]:
    """The x range of the histograms: the QUANTILES of every value pooled (at least 1, where perplexity
    starts), widened a little where they coincide."""
    low, high = np.quantile(pooled, QUANTILES)
    low = max(float(low), 1.0)
    return low, max(float(high), low * 1.05)


def plot_perplexity_histograms(groups: dict[str, list[Run]], out: Path) -> Path:
    """synthetic_ppl_gen0.png: `histogram_figure`."""
    return save(histogram_figure(groups), out / "synthetic_ppl_gen0.png")


def histogram_figure(groups: dict[str, list[Run]]):
    """The paper's figure: the density of per-sequence perplexities, under the generation-0 model, of the
    data each model k produced (gen_{k+1}/synthetic; as in the paper, labelled by the producing model),
    human text dashed, one panel per setting with its seeds pooled, one x-range (`histogram_range`) and one
    set of log bins for all panels. Densities are per decade of perplexity, so that areas on the log axis are
    shares."""
    runs = [r for rs in groups.values() for r in rs]
    last = last_generation(runs)
    data = {label: {g: np.concatenate([_synthetic_ppl(r, g) for r in rs]) for g in range(1, last_generation(rs) + 1)}
            for label, rs in groups.items()}
    human = {label: np.concatenate([np.asarray(r.baseline.get("ppl_gen0_per_sequence") or [], dtype=float)
                                    for r in rs]) for label, rs in groups.items()}
    human = {label: v[np.isfinite(v)] for label, v in human.items()}
    pooled = np.concatenate([v for d in data.values() for v in d.values()] + list(human.values()))
    cols = min(2, len(groups))
    fig, axes = figure(-(-len(groups) // cols), cols, (4.7, 3.3), sharex=True, sharey=True)
    colors = pyplot().cm.viridis(np.linspace(0, 0.9, max(last, 1)))  # one colour per producing model, in every panel
    low, high = histogram_range(pooled) if len(pooled) else (1.0, 10.0)
    edges = histogram_bins([v for d in data.values() for v in d.values()] + list(human.values()), low, high)
    for ax, label in zip(axes.flat, groups):
        for g, values in data[label].items():
            if len(values):
                ax.stairs(_log_density(values, edges), edges, lw=1.5, color=colors[g - 1],
                          label=f"data of model {g - 1}")
        if len(human[label]):
            ax.stairs(_log_density(human[label], edges), edges, lw=1.7, ls="--", color="black", label="human text")
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        number_ticks(ax.xaxis)
        number_ticks(ax.yaxis)
        ax.set_title(label, fontsize=FONT["title"])
        ax.tick_params(labelsize=FONT["tick"], labelbottom=True)
        ax.grid(alpha=0.3)
    for ax in axes[-1, :]:
        ax.set_xlabel("perplexity under the generation-0 model", fontsize=FONT["label"])
    for ax in axes[:, 0]:
        ax.set_ylabel("density per decade", fontsize=FONT["label"])
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    legend_in = legend_below(fig, axes, FONT["legend"])
    seeds = max(len(rs) for rs in groups.values())
    outside = float(np.mean((pooled < low) | (pooled > high))) if len(pooled) else 0.0
    top_in = titles(fig, "Per-sequence perplexity, under the generation-0 model, of the data each model produced",
                    [provenance(runs) + ("; seeds pooled in each panel" if seeds > 1 else ""),
                     f"x range: the {QUANTILES[0]:.1%}–{QUANTILES[1]:.1%} quantiles of all values pooled "
                     f"({outside:.1%} of them outside, not drawn)"])
    place(fig, axes.shape[0], cols, top_in + 0.3, 0.6 + legend_in, (0.75, 0.25), left_in=0.7)
    return fig
