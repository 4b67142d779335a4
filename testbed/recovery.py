"""The report's recovery table: runs that train on their own samples (replace) until generation k, then
heal with human data (mixing.schedule), against the damage done by generation k.

Per setting (one k and one healing setting, over seeds) and metric: the share of the damage undone,
(m_k - m_healed) / (m_k - m_0), with m the mean over seeds at generation 0, at k and at the last (healed)
generation; and the healing generations it took the metric to come back to generation 0's level, within
the seed-to-seed noise of generation 0 (report.NOISE_SIGMAS standard deviations, as the early-warning table).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from testbed import phases
from testbed.metrics.registry import BY_KEY
from testbed.report import NOISE_SIGMAS, Run, _pyplot, mean_std, per_generation, series, setting_phases

# The metrics of the table, head and tail separately where the runs have them.
RECOVERY_METRICS = ["ppl_human", "ppl_human_head", "ppl_human_tail", "kl_per_word", "tail_coverage",
                    "tail_token_mass", "tail_mass_lost", "grammatical_rate", "distinct_2", "entropy",
                    "loglik_std_gen0"]


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
    """The phase of the setting's mean over seeds at a generation, as the report's phase table gives it (the
    band: generation 0's spread across the seeds of all runs; one seed: the run's own bootstrap band)."""
    several = len({r.config.get("run.seed") for r in runs}) >= 2
    zero = [row for r in runs for row in r.rows if row["generation"] == 0]
    band = phases.seed_band(zero, NOISE_SIGMAS) if several else phases.row_band(rs[0].rows[0])
    generations, labels = setting_phases(rs, band)
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
    keys = [k for k in RECOVERY_METRICS if any(row.get(k) is not None for r in runs for row in r.rows)]
    sigma = {k: mean_std([row.get(k) for r in runs for row in r.rows if row["generation"] == 0])[1] for k in keys}
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


# The panels of the recovery figure (title, log axis and range from the metric registry).
PLOTTED = ["ppl_human", "ppl_human_tail", "tail_coverage", "grammatical_rate"]


def plot_recovery(groups: dict[str, list[Run]], out: Path) -> Path | None:
    """recovery.png: per healing setting (columns) and metric (rows), the control that never heals (replace
    settings without a schedule) and each switch generation k, the mean over seeds with the seeds' range
    shaded (inside what the metric can take), the switch marked; None without recovery runs."""
    healing: dict[str, list[tuple[int, str, list[Run]]]] = {}
    for label, rs in groups.items():
        if (s := switch(rs[0].config)) is not None:
            healing.setdefault(s[1], []).append((s[0], label, rs))
    if not healing:
        return None
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()

    controls = [(label, rs) for label, rs in groups.items() if rs[0].config.get("mixing.strategy") == "replace"
                and not rs[0].config.get("mixing.schedule")]
    rows = [BY_KEY[k] for k in PLOTTED
            if any(row.get(k) is not None for rs in groups.values() for r in rs for row in r.rows)]
    width = max(5.5 * len(healing), 8.0)
    fig, axes = plt.subplots(len(rows), len(healing), figsize=(width, 2.9 * len(rows)), squeeze=False)
    for col, (heal, settings) in enumerate(sorted(healing.items())):
        colors = plt.cm.viridis(np.linspace(0, 0.85, len(settings)))
        for row_i, m in enumerate(rows):
            key, ax = m.key, axes[row_i, col]
            for label, rs in controls:
                g, mean, _ = series(rs, key)
                ok = np.isfinite(mean)
                ax.plot(g[ok], mean[ok], color="black", ls="--", lw=1.2, label=f"{label} (no healing)")
            for color, (k, _, rs) in zip(colors, sorted(settings)):
                g, mean, _ = series(rs, key)
                ok = np.isfinite(mean)
                ax.plot(g[ok], mean[ok], marker="o", ms=3, color=color, label=f"healed from k={k}")
                _, values = per_generation(rs, key)
                seen = np.array([len(v) > 1 for v in values])
                if seen.any():  # the seeds' range, lowest to highest
                    lo = np.array([v.min() if len(v) else np.nan for v in values])
                    hi = np.array([v.max() if len(v) else np.nan for v in values])
                    lo, hi = m.clip(lo), m.clip(hi)
                    ax.fill_between(g[seen], lo[seen], hi[seen], color=color, alpha=0.2, lw=0)
                ax.axvline(k + 0.5, color=color, lw=0.8, ls=":")
            if m.log:
                ax.set_yscale("log")
            ax.set_title(f"{m.title}\nhealing: {heal}" if row_i == 0 else m.title, fontsize=9)
            ax.set_xlabel("generation")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0, col].legend(fontsize=7)
    fig.suptitle("Recovery: replace until generation k (dotted line), then human data\n"
                 "(mean over seeds; shaded: lowest to highest seed)", fontsize=11)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.8 / width, right=0.98, top=1 - 1.1 / height, bottom=0.6 / height, hspace=0.5, wspace=0.2)
    path = out / "recovery.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
