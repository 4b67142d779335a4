"""What every figure of testbed shares: headless matplotlib, one tick format, a legend below the panels that
never cuts an entry, a subtitle that says what produced the figure, and saving. The figures themselves live
with the views that draw them (figures.py, recovery.py, size.py)."""

from __future__ import annotations

import math
from pathlib import Path

from testbed.metrics.registry import Metric
from testbed.report.runs import Run

FONT = {"title": 9.5, "label": 8.5, "tick": 8, "legend": 8.5}  # points, in figures about a page wide


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(nrows: int, ncols: int, panel_in: tuple[float, float], **kwargs):
    """A figure of nrows x ncols panels of `panel_in` inches each (axes always a 2-d array)."""
    return pyplot().subplots(nrows, ncols, figsize=(panel_in[0] * ncols, panel_in[1] * nrows), squeeze=False,
                             **kwargs)


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_label(value: float, _pos=None) -> str:
    """Every tick of every figure: at most 4 significant digits, plain from 0.001 to 9999 (0.25, 2000), in
    powers of ten beyond (10⁴, 3·10⁷, 5·10⁻⁴)."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = float(f"{value / 10 ** exponent:.3g}")
    power = "10" + str(exponent).translate(SUPERSCRIPT)
    return power if mantissa == 1 else f"{mantissa:g}·{power}"


def number_ticks(axis) -> None:
    """A linear or log axis (its data already drawn) with ticks in `tick_label`'s format; on a log axis at 1,
    2, 5 x 10^k over up to two decades and at the powers of 10 beyond (their labels would collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if axis.get_scale() == "log":
        low, high = axis.get_view_interval()
        decades = math.log10(high / low) if low > 0 and high > low else 0.0
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
        axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(tick_label))


def metric_title(m: Metric) -> str:
    """A panel's title: the metric's, and which way is better."""
    return m.title + {True: " (higher is better)", False: " (lower is better)", None: ""}[m.higher_is_better]


def legend_size(labels: list[str], width_in: float, fontsize: float) -> tuple[int, float]:
    """The columns and the height (inches) of a legend of `labels` in `width_in` inches, with generous sizes
    (a handle and its padding; a character) so that no entry is cut."""
    entry_in = 0.7 + 0.0095 * fontsize * max(map(len, labels), default=1)
    ncol = max(1, min(len(labels), int(width_in // entry_in)))
    return ncol, 0.2 + math.ceil(len(labels) / ncol) * fontsize * 1.5 / 72


def legend_entries(axes) -> dict:
    """Label -> handle of every entry of every panel (only some have the human line), human text last."""
    entries = {}
    for ax in axes:
        entries.update(zip(*reversed(ax.get_legend_handles_labels())))
    if "human text" in entries:
        entries["human text"] = entries.pop("human text")
    return entries


def legend_below(fig, axes, fontsize: int) -> float:
    """One legend below the axes for every entry of every panel, in as many columns as fit the figure's
    width. The figure grows by the legend's height, which is returned (inches), so that the caller leaves it
    that much room at the bottom."""
    entries = legend_entries(axes.flat)
    ncol, height_in = legend_size(list(entries), fig.get_figwidth(), fontsize)
    fig.set_figheight(fig.get_figheight() + height_in)
    fig.legend(list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               fontsize=fontsize, frameon=False)
    return height_in


def place(fig, nrows: int, ncols: int, top_in: float, bottom_in: float, gaps_in: tuple[float, float],
          left_in: float = 0.75, right_in: float = 0.15) -> None:
    """Fixed margins and gaps between panels, in inches (tight_layout, or saving with bbox_inches="tight",
    measures every label: seconds). `gaps_in`: (between rows, between columns)."""
    width, height = fig.get_figwidth(), fig.get_figheight()
    axes_h = (height - top_in - bottom_in - (nrows - 1) * gaps_in[0]) / nrows
    axes_w = (width - left_in - right_in - (ncols - 1) * gaps_in[1]) / ncols
    fig.subplots_adjust(left=left_in / width, right=1 - right_in / width, top=1 - top_in / height,
                        bottom=bottom_in / height, hspace=gaps_in[0] / axes_h, wspace=gaps_in[1] / axes_w)


def setting_colors(n: int):
    """One colour per setting, the same order in every figure."""
    cm = pyplot().cm
    return cm.tab10(range(n)) if n <= 10 else cm.tab20([i % 20 for i in range(n)])


MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", (0, (1, 1.2)), (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (10, 3)))


def setting_styles(n: int) -> list[dict]:
    """One colour, line style and marker per setting, the same order in every figure: any 6 settings in a row
    differ in all three (told apart in grey print or by a colour-blind reader too)."""
    colors = pyplot().cm.tab10(range(10))  # ten distinct hues (tab20's pairs of shades are told apart by few)
    return [{"color": colors[i % 10], "ls": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]}
            for i in range(n)]


def titles(fig, title: str, lines: list[str]) -> float:
    """A title and, under it, a smaller subtitle of `lines`, both wrapped to the figure's width, at the top of
    the figure, which grows to hold them; returns their height in inches, for the caller's top margin."""
    import textwrap

    title = textwrap.fill(title, int(fig.get_figwidth() * 10))
    title_in = 0.25 * (title.count("\n") + 1)
    subtitle = "\n".join(textwrap.fill(line, int(fig.get_figwidth() * 16)) for line in lines)
    top_in = 0.25 + title_in + 0.17 * (subtitle.count("\n") + 1)
    fig.set_figheight(fig.get_figheight() + top_in)
    height = fig.get_figheight()
    fig.suptitle(title, y=1 - 0.1 / height, va="top", fontsize=12)
    fig.text(0.5, 1 - (0.17 + title_in) / height, subtitle, ha="center", va="top", fontsize=8.5, color="0.3")
    return top_in


def _model(run: Run) -> str:
    c = run.config
    if c.get("model.name_or_path"):
        return str(c["model.name_or_path"]).rstrip("/").rsplit("/", 1)[-1]
    shape = f"{c.get('model.arch')} {c.get('model.layers')}x{c.get('model.width')}"
    if c.get("pretrain.source") == "builtin":
        return f"{shape} pretrained on {c.get('pretrain.sentences')} sentences of the domains' mixture"
    if c.get("pretrain.source") == "files":
        return f"{shape} pretrained on files {str(c.get('pretrain.path')).rstrip('/').rsplit('/', 1)[-1]}"
    return f"{shape} from scratch"


def _data(run: Run) -> str:
    c = run.config
    if c.get("data.source") == "files":
        return f"files {str(c.get('data.path')).rstrip('/').rsplit('/', 1)[-1]}"
    if c.get("data.source") == "hf":
        return f"{c.get('data.hf_name')} {c.get('data.hf_config') or ''}".strip()
    domain = (f", domain {c.get('data.language.domain')} of {c.get('data.language.domains')}"
              if (c.get("data.language.domains") or 1) > 1 else "")
    return f"built-in language ({c.get('data.language.train_sentences')} training sentences{domain})"


def provenance(runs: list[Run]) -> str:
    """What produced a figure, for its subtitle: data, model(s), seeds."""
    data = sorted({_data(r) for r in runs})
    models = sorted({_model(r) for r in runs})
    seeds = sorted({r.config.get("run.seed") for r in runs}, key=str)
    return (f"data: {', '.join(data)}; model: {', '.join(models)}; "
            f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")


def save(fig, path: Path) -> Path:
    """Write the figure as a PNG and free it."""
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
