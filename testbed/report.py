"""Human-readable results: the terminal table of a run, and `testbed report` (markdown + PNG plots) over
runs and sweeps. Runs that differ only in `run.seed` are one setting; seeds give mean ± 95% CI."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from testbed import phases
from testbed.config import flatten
from testbed.rundir import RunDirError

# (row key, column header, format) of the terminal table, in the order shown.
COLUMNS = [
    ("generation", "gen", "{}"),
    ("phase", "phase", "{}"),
    ("ppl_human", "ppl_human", "{:.2f}"),
    ("ppl_human_head", "ppl_head", "{:.2f}"),
    ("ppl_human_tail", "ppl_tail", "{:.2f}"),
    ("distinct_1", "dist-1", "{:.3f}"),
    ("distinct_2", "dist-2", "{:.3f}"),
    ("distinct_4", "dist-4", "{:.3f}"),
    ("self_bleu", "self-BLEU", "{:.3f}"),
    ("rep_4", "rep-4", "{:.3f}"),
    ("entropy", "entropy", "{:.2f}"),
    ("tail_coverage", "tail_cov", "{:.3f}"),
    ("synthetic_ppl_gen0_mean", "syn_ppl@g0", "{:.1f}"),
    ("synthetic_ppl_gen0_p95", "p95", "{:.1f}"),
    ("kl_per_word", "KL/word", "{:.2f}"),
    ("tail_mass_lost", "tail_lost", "{:.3f}"),
]

# (row key, title, unit, higher is better) of the report's tables and plots.
METRICS = [
    ("ppl_human", "Perplexity on human test text", "perplexity", False),
    ("ppl_human_head", "Perplexity on human test text, frequent targets (half the training tokens)", "perplexity",
     False),
    ("ppl_human_tail", "Perplexity on human test text, rare targets (outside eval.tail_tokens)", "perplexity", False),
    ("distinct_1", "Distinct-1 of samples", "unique / total unigrams", True),
    ("distinct_2", "Distinct-2 of samples", "unique / total bigrams", True),
    ("distinct_4", "Distinct-4 of samples", "unique / total 4-grams", True),
    ("self_bleu", "Self-BLEU-4 of samples", "BLEU", False),
    ("rep_4", "Repetition rate rep-4", "share of repeated 4-grams", False),
    ("entropy", "Unigram entropy of samples", "bits", True),
    ("tail_coverage", "Tail coverage", "share of rare human words produced", True),
    ("synthetic_ppl_gen0_mean", "Synthetic data under generation 0 (mean)", "perplexity", None),
    ("synthetic_ppl_gen0_p95", "Synthetic data under generation 0 (95th percentile)", "perplexity", None),
    ("kl_per_word", "KL(language || model), estimated", "nats / word", False),
    ("excess_nll_frequent_words", "Model NLL - exact NLL of frequent words (held-out sentences)", "nats / word", False),
    ("excess_nll_rare_words", "Model NLL - exact NLL of rare words (held-out sentences)", "nats / word", False),
    ("true_nll_per_word", "True NLL of samples under the language", "nats / word", None),
    ("grammatical_rate", "Grammatical sentences in samples", "share", True),
    ("tail_mass_lost", "True probability mass of words no longer produced", "probability", False),
    ("ppl_self", "Perplexity of the model on its own samples", "perplexity", None),
    ("ppl_gap", "Gap: log ppl_human - log ppl_self", "nats", False),
    ("token_entropy", "Next-token entropy on human text", "nats", None),
    ("confident_share", "Confident positions (top p >= 0.99) on human text", "share", None),
    ("tail_token_mass", "Sampled tokens outside the human head", "share", True),
    ("unigram_kl", "Unigram KL(human || samples), smoothed", "nats", False),
    ("loglik_std_gen0", "Spread of sample log-likelihood under generation 0", "std, nats / token", True),
    ("loglik_std_self", "Spread of sample log-likelihood under the model", "std, nats / token", True),
    ("effective_rank", "Effective rank of representations of human text", "rank", True),
    ("embedding_diversity", "Sample embedding diversity under generation 0", "mean cosine distance", True),
]

# The early-warning table's signals: which moves first, beyond the seed-to-seed noise of generation 0.
SIGNALS = ["ppl_human", "ppl_human_head", "ppl_human_tail", "ppl_gap", "token_entropy", "confident_share",
           "tail_coverage", "tail_token_mass", "unigram_kl", "distinct_2", "self_bleu", "entropy", "loglik_std_gen0",
           "effective_rank", "embedding_diversity", "kl_per_word", "grammatical_rate"]
NOISE_SIGMAS = phases.NOISE_SIGMAS

# (row key, header) of the curation table: what each defence kept and dropped, means over generations >= 1.
CURATION = [("synthetic_kept", "synthetic kept"), ("synthetic_dropped_dedup", "dropped: dedup"),
            ("synthetic_dropped_verifier", "dropped: verifier"), ("synthetic_dropped_perplexity", "dropped: ppl"),
            ("pool_human_in", "pool human"), ("pool_human_kept", "human kept"),
            ("pool_synthetic_in", "pool synthetic"), ("pool_synthetic_kept", "synthetic kept after screening"),
            ("detector_tpr", "detector TPR"), ("detector_fpr", "detector FPR"),
            ("z_synthetic_mean", "z synthetic"), ("z_human_mean", "z human")]

IGNORED_KEYS = {"run.name", "run.out_dir", "run.seed", "run.prefix_from", "run.prefix_until"}
SUMMARY = ["ppl_human", "distinct_2", "self_bleu", "entropy", "tail_coverage", "synthetic_ppl_gen0_mean",
           "kl_per_word", "tail_mass_lost"]


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def format_table(rows: list[dict], baseline: dict | None = None) -> str:
    """A fixed-width table, one row per generation, the human baseline first (ppl_human does not apply)."""
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows)]
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


def load_run(path: Path) -> Run:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    baseline_file = path / "human_baseline.json"
    baseline = json.loads(baseline_file.read_text()) if baseline_file.is_file() else {}
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg.pop("sweep", None)  # the sweep spec is the same for every run of a sweep
    return Run(path, flatten(cfg), rows, baseline)


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


def _sweep_label(run: Run) -> str | None:
    """A sweep run's name lists its own overrides (key=value,...), after its setting's name if it has one:
    the label, without the seed."""
    parts = run.path.name.split(",")
    named = (run.path.parent / "sweep.json").is_file() and "=" not in parts[0]
    if not all("=" in p and "." in p.partition("=")[0] for p in parts[named:]):
        return None
    if named:
        return ", ".join([parts[0], *(p for p in parts[1:] if not p.startswith("run.seed="))])
    kept = [p.partition("=") for p in parts if not p.startswith("run.seed=")]
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, _, v in kept) or "run"


def group_settings(runs: list[Run]) -> dict[str, list[Run]]:
    """Setting label -> the runs of that setting (its seeds). Sweep runs are labelled by the values
    their sweep set; other runs by the config values that differ between runs."""
    labels = [_sweep_label(r) for r in runs]
    same_label_differs = any(differing_keys([r for r, other in zip(runs, labels) if other == label])
                             for label in set(labels))
    if None in labels or same_label_differs:  # e.g. two sweeps whose runs vary only their seed
        keys = differing_keys(runs)
        labels = [", ".join(f"{k.split('.')[-1]}={r.config.get(k)}" for k in keys) or "run" for r in runs]
    groups: dict[str, list[Run]] = {}
    for label, r in zip(labels, runs):
        groups.setdefault(label, []).append(r)
    return groups


def _finite_values(values: list[float | None]) -> np.ndarray:
    return np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)


def mean_ci(values: list[float | None]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (NaN with one value)."""
    from scipy import stats

    v = _finite_values(values)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN with one value): the paper's mean ± std over runs."""
    v = _finite_values(values)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def series(runs: list[Run], key: str, spread=mean_ci) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generations, mean and spread (`mean_ci`: CI half-width, or `mean_std`) of a metric over the runs of
    one setting."""
    generations = sorted({row["generation"] for r in runs for row in r.rows})
    stats_ = [spread([row.get(key) for r in runs for row in r.rows if row["generation"] == g]) for g in generations]
    return np.array(generations), np.array([s[0] for s in stats_]), np.array([s[1] for s in stats_])


# ---------------------------------------------------------------------------------------------
# Markdown.


def _fmt(mean: float, ci: float) -> str:
    if math.isnan(mean):
        return "-"
    digits = 2 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f}" + ("" if math.isnan(ci) else f" ± {ci:.{digits}f}")


def markdown(groups: dict[str, list[Run]], runs: list[Run]) -> str:
    keys = differing_keys(runs)
    seeds = sorted({r.config.get("run.seed") for r in runs})
    lines = ["# Model-collapse report", "",
             f"{len(runs)} runs, {len(groups)} settings, seeds {seeds}. Cells: mean ± standard deviation over "
             "seeds (the plots shade the 95% t-interval of the mean).", "", "## Settings", "",
             "| setting | runs | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for label, rs in groups.items():
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(str(rs[0].config.get(k)) for k in keys) + " |")
    metrics_present = [m for m in METRICS if any(m[0] in row for r in runs for row in r.rows)]
    summary = [k for k in SUMMARY if any(k == m[0] for m in metrics_present)]
    last = max(row["generation"] for r in runs for row in r.rows)
    lines += ["", f"## Summary: mean at the first → last generation (0 → {last})", "",
              "| setting | " + " | ".join(f"`{k}`" for k in summary) + " |", "|---|" + "---|" * len(summary)]
    for label, rs in groups.items():
        cells = []
        for key in summary:
            _, mean, _ = series(rs, key)
            finite = mean[np.isfinite(mean)]
            cells.append(f"{finite[0]:.3g} → {finite[-1]:.3g}" if len(finite) else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += (early_warning(groups, runs) + phase_table(groups, runs) + curation_table(groups)
              + recovery_table(groups, runs))
    for key, title, unit, better in metrics_present:
        arrow = {True: " (higher is better)", False: " (lower is better)", None: ""}[better]
        lines += ["", f"## {title}", "", f"`{key}`, {unit}{arrow}.", "",
                  "| generation | " + " | ".join(groups) + " | human |", "|---|" + "---|" * (len(groups) + 1)]
        by_setting = {label: series(rs, key, mean_std) for label, rs in groups.items()}
        human = mean_std([r.baseline.get(key) for r in runs])
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
    present = [k for k in SIGNALS if any(k in row for r in runs for row in r.rows)]
    sigma = {k: mean_std([row.get(k) for r in runs for row in r.rows if row["generation"] == 0])[1] for k in present}
    table = {k: {label: first_moved(rs, k, sigma[k]) for label, rs in groups.items()} for k in present}
    last = max(row["generation"] for r in runs for row in r.rows)
    order = sorted(present, key=lambda k: np.mean([v if v is not None else last + 1 for v in table[k].values()]))
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
    keys = [(k, h) for k, h in CURATION if any(row.get(k) is not None for row in rows)]
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


def plot_metrics(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> Path:
    """Each metric against generation: a line per setting, a 95% CI band over seeds, human dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    present = [m for m in METRICS if any(row.get(m[0]) is not None for r in runs for row in r.rows)]
    cols = 4
    nrows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    colors = plt.cm.tab10(np.arange(len(groups)) % 10)
    for ax, (key, title, unit, _) in zip(axes.flat, present):
        for color, (label, rs) in zip(colors, groups.items()):
            g, mean, ci = series(rs, key)
            ok = np.isfinite(mean)
            ax.plot(g[ok], mean[ok], marker="o", ms=3, color=color, label=label)
            band = ok & np.isfinite(ci)
            if band.any():
                ax.fill_between(g[band], (mean - ci)[band], (mean + ci)[band], color=color, alpha=0.2, lw=0)
        human, _ = mean_ci([r.baseline.get(key) for r in runs])
        if np.isfinite(human):
            ax.axhline(human, color="black", ls="--", lw=1, label="human text")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("generation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    legend = {}  # label -> handle, over every panel (only some have the human line)
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(5, len(legend)), fontsize=9,
               frameon=False)
    seeds = max(len(rs) for rs in groups.values())
    fig.suptitle("Model collapse across generations" + (" (mean and 95% CI over seeds)" if seeds > 1 else ""))
    # Fixed margins: tight_layout measured every label of the grid and took seconds.
    fig.subplots_adjust(left=0.05, right=0.99, top=1 - 0.8 / fig.get_figheight(), bottom=0.9 / fig.get_figheight(),
                        hspace=0.55, wspace=0.32)
    path = out / "metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False, sharey=True)
    for ax, (label, rs) in zip(axes.flat, groups.items()):
        last = max(row["generation"] for r in rs for row in r.rows)
        data = {g: np.concatenate([_synthetic_ppl(r, g) for r in rs]) for g in range(1, last + 1)}
        human = np.concatenate([np.asarray(r.baseline.get("ppl_gen0_per_sequence") or [], dtype=float) for r in rs])
        human = human[np.isfinite(human)]
        pooled = np.concatenate([*data.values(), human])
        if not len(pooled):
            continue
        bins = np.geomspace(max(pooled.min(), 1.0), pooled.max() * 1.01, 40)
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(data), 1)))
        for color, (g, values) in zip(colors, data.items()):
            if len(values):
                ax.hist(values, bins=bins, density=True, histtype="step", lw=1.4, color=color,
                        label=f"data of model {g - 1}")
        if len(human):
            ax.hist(human, bins=bins, density=True, histtype="step", lw=1.6, ls="--", color="black",
                    label="human text")
        ax.set_xscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("perplexity under the generation-0 model")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("density")
    axes.flat[-1].legend(fontsize=8)
    fig.suptitle("Per-sequence perplexity, under the generation-0 model, of the data each model produced")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.85, bottom=0.15, wspace=0.08)
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
    return [md, plot_metrics(groups, runs, out), plot_perplexity_histograms(groups, out)] + recovery_plots(groups, out)
