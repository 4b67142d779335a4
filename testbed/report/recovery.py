"""The report's recovery table: runs that train on their own samples (replace) until generation k, then
heal with human data (mixing.schedule), against the damage done by generation k.

Per setting (one k and one healing setting, over seeds) and metric: the share of the damage undone,
(m_k - m_healed) / (m_k - m_0), with m the mean over seeds at generation 0, at k and at the last (healed)
generation; and the healing generations it took the metric to come back to generation 0's level, within
the seed-to-seed noise of generation 0 (runs.NOISE_SIGMAS standard deviations, as the early-warning table).
The table's columns and the figure's panels are the metric registry's RECOVERY and RECOVERY_PLOT views.

With extra evaluation sets (eval.corpora) and a human-only control, a second table: per setting, how much worse
than the control of its seed each corpus metric was at k and after healing (the registry's OUT_OF_DOMAIN view):
what collapse erased beyond what fine-tuning alone forgets, and what healing gave back; out_of_domain.png draws
that excess at every generation, the pretrained base against the same control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.metrics.registry import OUT_OF_DOMAIN, RECOVERY, RECOVERY_PLOT, Metric, shown_in
from testbed.report.plotting import (
    FONT,
    figure,
    legend_below,
    number_ticks,
    place,
    provenance,
    save,
    setting_colors,
    setting_styles,
    titles,
)
from testbed.report.runs import (
    NOISE_SIGMAS,
    Run,
    corpora,
    format_mean_std,
    mean_std,
    noise_band,
    per_generation,
    seed_sigma,
    series,
    setting_phases,
)


def switch(config: dict) -> tuple[int, str] | None:
    """(k, healing) of a recovery run: mixing.strategy replace, and a first schedule entry that brings
    human data from generation k + 1 on (`healing`: its keys, e.g. 'fixed_fraction, human_fraction=1.0');
    None for other runs."""
    schedule = config.get("mixing.schedule") or []
    if config.get("mixing.strategy") != "replace" or not schedule:
        return None
    entry = schedule[0]
    if entry.get("strategy", "replace") == "replace":
        return None
    keys = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("from_generation", "strategy"))
    return entry["from_generation"] - 1, entry["strategy"] + (f", {keys}" if keys else "")


def _phase_at(rs: list[Run], runs: list[Run], generation: int) -> str:
    """The phase of the setting's mean over seeds at a generation, as the report's phase table gives it."""
    generations, labels = setting_phases(rs, noise_band(runs, rs))
    return dict(zip(generations, labels)).get(generation, "-")


def recovery_cell(runs: list[Run], key: str, k: int, sigma0: float) -> str:
    """'73% (2)': the share of the damage at generation k undone by the last generation (of log perplexity
    for perplexities), and the healing generations until the metric was back within the noise of generation 0
    ('-': not by the last); 'no damage' when generation k itself is within that noise."""
    g, mean, _ = series(runs, key)
    at = dict(zip(g.tolist(), mean.tolist()))
    m0, mk, healed = at.get(0, math.nan), at.get(k, math.nan), at.get(int(g[-1]), math.nan)
    if not all(np.isfinite([m0, mk, healed, sigma0])):
        return "-"
    band = NOISE_SIGMAS * sigma0
    if abs(mk - m0) <= band:
        return "no damage"
    direction = np.sign(mk - m0)
    back = [int(h) - k for h, m in zip(g, mean) if h > k and np.isfinite(m) and (m - m0) * direction <= band]
    if key.startswith("ppl_"):  # perplexities move by factors: the share of the damage on the log scale
        m0, mk, healed = np.log([m0, mk, healed])
    return f"{(mk - healed) / (mk - m0):.0%} ({back[0] if back else '-'})"


def recovery_table(groups: dict[str, list[Run]], runs: list[Run]) -> list[str]:
    """Markdown: per recovery setting, the switch generation k, the healing, the phase at k and, per metric,
    the share of the damage undone and the healing generations it took. Empty without recovery runs."""
    settings = [(label, rs, switch(rs[0].config)) for label, rs in groups.items()]
    settings = sorted([s for s in settings if s[2] is not None], key=lambda s: (s[2][1], s[2][0]))
    if not settings:
        return []
    keys = [m.key for m in shown_in(RECOVERY, corpora(runs))
            if any(row.get(m.key) is not None for r in runs for row in r.rows)]
    sigma = {k: seed_sigma(runs, k) for k in keys}
    lines = ["", "## Recovery: how much of the damage healing undoes", "",
             "Runs trained on their own samples (replace) until generation k, then on human data. Cells: the share "
             "of the damage at generation k undone by the last generation, (m_k − m_healed) / (m_k − m_0), means "
             "over seeds, of log perplexity for perplexities (100%: back to generation 0; above: better than "
             "generation 0; below 0: worse than at k); "
             f"in parentheses the healing generations until the metric was back within {NOISE_SIGMAS:g} standard "
             "deviations of generation 0 across seeds (`-`: not by the last). `no damage`: generation k was "
             "within that noise. Phase at k: as in the phase table, of the mean over seeds.", "",
             "| setting | k | healing | generations healed | phase at k | " + " | ".join(f"`{k}`" for k in keys) + " |",
             "|---|---|---|---|---|" + "---|" * len(keys)]
    for label, rs, (k, healing) in settings:
        last = max(row["generation"] for r in rs for row in r.rows)
        cells = [recovery_cell(rs, key, k, sigma[key]) for key in keys]
        lines.append(f"| {label} | {k} | {healing} | {last - k} | {_phase_at(rs, runs, k)} | " + " | ".join(cells)
                     + " |")
    return lines


def is_human_control(config: dict) -> bool:
    """A run that fine-tunes on human data only in every generation (fixed_fraction, human_fraction 1, no
    schedule): what fine-tuning alone forgets, the baseline of out-of-domain damage."""
    return (config.get("mixing.strategy") == "fixed_fraction" and float(config.get("mixing.human_fraction")) == 1.0
            and not config.get("mixing.schedule"))


def _at(run: Run, key: str, generation: int) -> float:
    value = next((row.get(key) for row in run.rows if row["generation"] == generation), None)
    return math.nan if value is None else float(value)


def _worse(value: float, than: float, key: str) -> float:
    """How much worse `value` is than `than`: the log ratio for a perplexity, the difference otherwise."""
    return float(np.log(value / than)) if key.startswith("ppl_") else value - than


def _excess(run: Run, control: Run, key: str, generation: int) -> float:
    """How much worse than the human-only control the run is at `generation` (damage positive)."""
    return _worse(_at(run, key, generation), _at(control, key, generation), key)


@dataclass
class Paired:
    """A setting that trains on its own samples (healed from k, or replace throughout), each of its runs with
    the human-only control of its seed."""

    label: str
    healing: str | None  # None: replace throughout
    k: int  # the switch generation; without healing, the last
    last: int
    pairs: list[tuple[Run, Run]]

    def excess(self, key: str, generation: int) -> list[float]:
        """Per seed, how much worse than the control (`_excess`)."""
        return [_excess(r, c, key, generation) for r, c in self.pairs]

    def given_back(self, key: str) -> list[float]:
        """Per seed, the share of the excess at k that healing removed by the last generation (none without
        healing)."""
        if self.healing is None:
            return []
        return [(a - b) / a for a, b in zip(self.excess(key, self.k), self.excess(key, self.last)) if a != 0]


def paired_settings(groups: dict[str, list[Run]], runs: list[Run]) -> list[Paired]:
    """The settings that train on their own samples, paired seed by seed with the human-only control, when
    the runs have extra evaluation sets (eval.corpora) and a control; empty otherwise."""
    controls = {r.config.get("run.seed"): r for rs in groups.values() for r in rs if is_human_control(r.config)}
    if not corpora(runs) or not controls:
        return []
    settings = []
    for label, rs in groups.items():
        s = switch(rs[0].config)
        if is_human_control(rs[0].config) or (s is None and rs[0].config.get("mixing.strategy") != "replace"):
            continue
        pairs = [(r, controls[r.config.get("run.seed")]) for r in rs if r.config.get("run.seed") in controls]
        if pairs:
            last = max(row["generation"] for r in rs for row in r.rows)
            settings.append(Paired(label, s[1] if s is not None else None, s[0] if s is not None else last, last,
                                   pairs))
    return settings


def _out_of_domain_metrics(runs: list[Run]) -> list[Metric]:
    return [m for m in shown_in(OUT_OF_DOMAIN, corpora(runs))
            if any(row.get(m.key) is not None for r in runs for row in r.rows)]


def out_of_domain_table(groups: dict[str, list[Run]], runs: list[Run]) -> list[str]:
    """Markdown: for runs with extra evaluation sets (eval.corpora) and a human-only control, per setting that
    trains on its own samples and corpus metric, the damage beyond the control's forgetting at the switch
    generation k (or at the last, without healing) and the share of it healing undid, seed by seed (each run
    against the control of its seed). Empty without such runs."""
    settings = paired_settings(groups, runs)
    if not settings:
        return []
    lines = ["", "## Out of domain: what collapse erased beyond fine-tuning's forgetting, and what healing gave back",
             "", "Each run against the human-only control of its seed (same base, same generation 0). `base`: the "
             "pretrained base (zero-shot); `gen 0`: after fine-tuning; `at k`: the switch generation (replace "
             "settings without healing: their last); `beyond control at k`: ×(run / control) for perplexities, "
             "the difference otherwise, mean ± std over seeds; `healed`: the same at the last generation; "
             "`given back`: the share of the excess at k that healing removed (of log perplexity; above 100%: better "
             f"than the control); `no damage`: the excess at k was within {NOISE_SIGMAS:g} standard deviations of "
             "its seed-to-seed spread, or below 0.", "",
             "| setting | k | metric | base | gen 0 | at k | control at k | beyond control at k | healed | "
             "beyond control, healed | given back |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in settings:
        healed, k, last, paired = p.healing is not None, p.k, p.last, p.pairs
        for m in _out_of_domain_metrics(runs):
            ppl = m.key.startswith("ppl_")
            excess_k = p.excess(m.key, k)
            lines.append("| " + " | ".join([
                p.label, str(k) if healed else f"- ({k})", f"`{m.key}`",
                _values(paired, f"{m.key}_zero_shot", 0), _values(paired, m.key, 0), _values(paired, m.key, k),
                _values(paired, m.key, k, of_control=True), _excess_cell(excess_k, ppl),
                _values(paired, m.key, last) if healed else "-",
                _excess_cell(p.excess(m.key, last), ppl) if healed else "-",
                _share_cell(p.given_back(m.key), excess_k)]) + " |")
    return lines


def _values(paired: list[tuple[Run, Run]], key: str, generation: int, of_control: bool = False) -> str:
    """Mean ± std over seeds of a metric at a generation, of the runs (or of their controls)."""
    return format_mean_std(*mean_std([_at(c if of_control else r, key, generation) for r, c in paired]))


def _excess_cell(values: list[float], ppl: bool) -> str:
    """Mean ± std over seeds of an excess: a factor for log ratios (perplexities), else the difference."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    if ppl:
        return f"×{math.exp(mean):.2f}" + ("" if math.isnan(std) else f" (±{std:.2f} in log)")
    return format_mean_std(mean, std)


def _share_cell(values: list[float], excess_k: list[float]) -> str:
    """Mean ± std over seeds of the share given back; `no damage` when the excess at k is not above noise."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    k_mean, k_std = mean_std(excess_k)
    if k_mean <= 0 or (not math.isnan(k_std) and k_mean <= NOISE_SIGMAS * k_std):
        return "no damage"
    return f"{mean:.0%}" + ("" if math.isnan(std) else f" ± {std:.0%}")


def plot_recovery(groups: dict[str, list[Run]], out: Path) -> Path | None:
    """recovery.png: per healing setting (columns) and metric (rows, the registry's RECOVERY_PLOT view), the
    control that never heals (replace settings without a schedule) and each switch generation k, the mean
    over seeds with the seeds' range shaded (inside what the metric can take), the switch marked. One colour
    per k in every panel, one x-range for all. None without recovery runs."""
    healing: dict[str, list[tuple[int, str, list[Run]]]] = {}
    for label, rs in groups.items():
        if (s := switch(rs[0].config)) is not None:
            healing.setdefault(s[1], []).append((s[0], label, rs))
    if not healing:
        return None
    from matplotlib.ticker import MaxNLocator

    runs = [r for rs in groups.values() for r in rs]
    controls = [(label, rs) for label, rs in groups.items() if rs[0].config.get("mixing.strategy") == "replace"
                and not rs[0].config.get("mixing.schedule")]
    human_only = [(label, rs) for label, rs in groups.items() if is_human_control(rs[0].config)]
    rows = [m for m in shown_in(RECOVERY_PLOT, corpora(runs))
            if any(row.get(m.key) is not None for r in runs for row in r.rows)]
    ks = sorted({k for settings in healing.values() for k, _, _ in settings})
    colors = dict(zip(ks, setting_colors(len(ks))))
    fig, axes = figure(len(rows), len(healing), (max(5.5, 8.0 / len(healing)), 2.9), sharex=True)
    for col, (heal, settings) in enumerate(sorted(healing.items())):
        for row_i, m in enumerate(rows):
            key, ax = m.key, axes[row_i, col]
            for (label, rs), style, what in [*((c, "--", "no healing") for c in controls),
                                             *((c, "-.", "human data throughout") for c in human_only)]:
                g, mean, _ = series(rs, key)
                ok = np.isfinite(mean)
                ax.plot(g[ok], mean[ok], color="black", ls=style, lw=1.2, label=f"{label} ({what})")
            base = [row.get(f"{key}_zero_shot") for r in runs for row in r.rows[:1]
                    if r.config.get("pretrain.source", "none") != "none"]
            if any(v is not None for v in base):  # what the pretrained base scored (before fine-tuning)
                ax.axhline(mean_std(base)[0], color="grey", ls=":", lw=1.2, label="pretrained base")
            for k, _, rs in sorted(settings):
                g, mean, _ = series(rs, key)
                ok = np.isfinite(mean)
                ax.plot(g[ok], mean[ok], marker="o", ms=3, color=colors[k], label=f"healed from k={k}")
                _, values = per_generation(rs, key)
                seen = np.array([len(v) > 1 for v in values])
                if seen.any():  # the seeds' range, lowest to highest
                    lo = m.clip(np.array([v.min() if len(v) else np.nan for v in values]))
                    hi = m.clip(np.array([v.max() if len(v) else np.nan for v in values]))
                    ax.fill_between(g[seen], lo[seen], hi[seen], color=colors[k], alpha=0.2, lw=0)
                ax.axvline(k + 0.5, color=colors[k], lw=0.8, ls=":")
            if m.log:
                ax.set_yscale("log")
            number_ticks(ax.yaxis)
            ax.set_title(f"{m.title}\nhealing: {heal}" if row_i == 0 else m.title, fontsize=9)
            ax.set_ylabel(m.unit, fontsize=8)
            ax.set_xlabel("generation", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7, labelbottom=True)  # shared x-range, labels on every panel
            ax.grid(alpha=0.3)
        axes[0, col].legend(fontsize=7)
    seeds = max(len(rs) for rs in groups.values())
    top_in = titles(fig, "Recovery: replace until generation k (dotted line), then human data",
                    [provenance(runs) + (f"; mean over {seeds} seeds, shaded: lowest to highest seed"
                                         if seeds > 1 else "")])
    height, width = fig.get_figheight(), fig.get_figwidth()
    fig.subplots_adjust(left=0.9 / width, right=0.98, top=1 - (top_in + 0.45) / height, bottom=0.6 / height,
                        hspace=0.5, wspace=0.25)
    return save(fig, out / "recovery.png")


def _mean_range(values: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per generation, the mean and the lowest and highest seed of per-seed values (NaN where none)."""
    rows = [np.asarray([v for v in vs if np.isfinite(v)]) for vs in values]
    return tuple(np.array([f(v) if len(v) else np.nan for v in rows]) for f in (np.mean, np.min, np.max))


def plot_out_of_domain(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> Path | None:
    """out_of_domain.png: `out_of_domain_figure`; None without a control and eval.corpora."""
    fig = out_of_domain_figure(groups, runs)
    return None if fig is None else save(fig, out / "out_of_domain.png")


def out_of_domain_figure(groups: dict[str, list[Run]], runs: list[Run]):
    """Per corpus metric (the registry's OUT_OF_DOMAIN view), how much worse than the human-only control of
    its seed each setting that trains on its own samples is at every generation (a factor for perplexities,
    on a log axis; the difference otherwise): the control is the line at ×1 / 0, the pretrained base drawn
    against the same control. One colour per switch generation k (its line dotted), one line style per
    healing; each panel lists the share of the excess at k given back (as out_of_domain_table). None without
    a control and eval.corpora."""
    settings = paired_settings(groups, runs)
    metrics = _out_of_domain_metrics(runs)
    if not settings or not metrics:
        return None
    from matplotlib.ticker import MaxNLocator

    ks = sorted({p.k for p in settings if p.healing is not None})
    colors = dict(zip(ks, setting_colors(len(ks))))
    healings = sorted({p.healing for p in settings if p.healing is not None})
    styles = dict(zip(healings, setting_styles(len(healings))))
    ncols = 2 if len(metrics) > 1 else 1
    nrows = -(-len(metrics) // ncols)
    fig, axes = figure(nrows, ncols, (4.6, 3.3), sharex=True)
    generations = np.arange(max(p.last for p in settings) + 1)
    controls = list({id(c): c for p in settings for _, c in p.pairs}.values())
    for ax, m in zip(axes.flat, metrics):
        ppl = m.key.startswith("ppl_")
        show = np.exp if ppl else (lambda x: x)
        ax.axhline(show(0.0), color="black", lw=1.4, label="human-only control (each run against its seed's)")
        base = [[_base_excess(c, m.key, g) for c in controls] for g in generations]
        mean, _, _ = _mean_range(base)
        if np.isfinite(mean).any():
            ax.plot(generations, show(mean), color="0.45", ls=":", lw=1.6, label="pretrained base")
        given = []
        for p in settings:
            g = np.arange(p.last + 1)
            mean, low, high = _mean_range([p.excess(m.key, x) for x in g])
            ok = np.isfinite(mean)
            if p.healing is None:
                style, label = {"color": "0.3", "ls": "--", "marker": "."}, f"{p.label} (no healing)"
            else:
                given.append(f"{p.label}: {_share_cell(p.given_back(m.key), p.excess(m.key, p.k))}")
                style = {**styles[p.healing], "color": colors[p.k]}
                label = f"{p.label} (k={p.k}; {p.healing})"
                ax.axvline(p.k + 0.5, color=colors[p.k], lw=0.8, ls=":")
            ax.plot(g[ok], show(mean[ok]), ms=3.5, lw=1.4, label=label, **style)
            if len(p.pairs) > 1:
                ax.fill_between(g[ok], show(low[ok]), show(high[ok]), color=style["color"], alpha=0.15, lw=0)
        if given:
            ax.text(0.02, 0.97, "given back:\n" + "\n".join(given), transform=ax.transAxes, va="top",
                    fontsize=FONT["legend"] - 1, bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"})
        if ppl:
            ax.set_yscale("log")
        number_ticks(ax.yaxis)
        ax.set_title(m.title, fontsize=FONT["title"])
        ax.set_ylabel("× the control's perplexity" if ppl else f"{m.unit} beyond the control",
                      fontsize=FONT["label"])
        ax.set_xlabel("generation", fontsize=FONT["label"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=FONT["tick"], labelbottom=True)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    legend_in = legend_below(fig, axes, FONT["legend"])
    seeds = max(len(p.pairs) for p in settings)
    top_in = titles(fig, "Out of domain: the damage beyond fine-tuning's own forgetting, and what healing gave back",
                    [provenance(runs) + (f"; mean over {seeds} seeds, shaded: lowest to highest seed" if seeds > 1
                                         else ""),
                     "Each run against the human-only control of its seed (the line at ×1 or 0); dotted: the "
                     "switch to healing after generation k; given back: the share of the excess at k that healing "
                     "removed by the last generation (100%: back to the control)"])
    place(fig, nrows, ncols, top_in + 0.35, 0.6 + legend_in, (0.75, 0.8))
    return fig


def _base_excess(control: Run, key: str, generation: int) -> float:
    """How much worse than the control the pretrained base (its zero-shot value, generation 0's row) is."""
    return _worse(_at(control, f"{key}_zero_shot", 0), _at(control, key, generation), key)
