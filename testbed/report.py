"""Human-readable results: the per-generation table printed at the end of a run."""

from __future__ import annotations

import math

# (row key, column header, format) in the order shown.
COLUMNS = [
    ("generation", "gen", "{}"),
    ("ppl_human", "ppl_human", "{:.2f}"),
    ("distinct_1", "dist-1", "{:.3f}"),
    ("distinct_2", "dist-2", "{:.3f}"),
    ("distinct_4", "dist-4", "{:.3f}"),
    ("self_bleu", "self-BLEU", "{:.3f}"),
    ("rep_4", "rep-4", "{:.3f}"),
    ("entropy", "entropy", "{:.2f}"),
    ("tail_coverage", "tail_cov", "{:.3f}"),
    ("synthetic_ppl_gen0_mean", "syn_ppl@g0", "{:.1f}"),
    ("synthetic_ppl_gen0_p95", "p95", "{:.1f}"),
]


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def format_table(rows: list[dict], baseline: dict | None = None) -> str:
    """A fixed-width table, one row per generation, the human baseline first (ppl_human does not apply)."""
    body = ([{**baseline, "ppl_human": None}] if baseline else []) + rows
    cells = [[header for _, header, _ in COLUMNS]]
    cells += [[_cell(r.get(key), fmt) for key, _, fmt in COLUMNS] for r in body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
