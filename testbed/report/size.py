"""The size axis: runs that differ in model, with the parameter count on the x-axis. A view over
testbed/runs.py: collapse_by_size.md and .png when a report's runs differ in model size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from testbed.report.plotting import figure, number_ticks, provenance, save, titles
from testbed.report.runs import Run, differing_keys, format_mean_std, last_generation, mean_std, setting_label

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
    last = last_generation(runs)

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
            first, final = (format_mean_std(*mean_std(at(rs, g))) for g in (0, last))
            cells += [f"{first} → {final}", format_mean_std(*mean_std(ratio(rs)))]
        lines.append(f"| {names[n]} | {n:,} | " + " | ".join(cells) + " |")
    md = out / "collapse_by_size.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")

    fig, axes = figure(1, 2, (5.0, 3.8))
    axes = axes[0]
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
    for ax, title in zip(axes, (f"Perplexity on human text at generation {last}",
                                f"Perplexity ratio, generation {last} / generation 0")):
        ax.set_xscale("log")
        number_ticks(ax.yaxis)
        ax.set_xlabel("parameters")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("perplexity")
    axes[1].set_ylabel("ratio (1: no loss)")
    axes[1].legend(fontsize=8)
    seeds = max(len(rs) for per_size in by_setting.values() for rs in per_size.values())
    top_in = titles(fig, "Collapse by model size", [provenance(runs) + (
        f"; mean ± std over {seeds} seeds" if seeds > 1 else "")])
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.09, right=0.98, top=1 - (top_in + 0.3) / height, bottom=0.6 / height, wspace=0.3)
    return [md, save(fig, out / "collapse_by_size.png")]
