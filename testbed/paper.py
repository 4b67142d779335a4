"""`testbed paper-check`: a run or sweep of the Shumailov et al. (Nature 2024) setting beside the paper.

The paper fine-tunes OPT-125m on WikiText-2 and reports, for the perplexity on the human test split:
the zero-shot base model 115, the fine-tuned generation 0 about 34, and by the last generation +20 to +28
points with no original data kept (5 epochs a cycle) and only a minor degradation with 10% kept (10 epochs).
Each number is checked against a band around it, wide enough for seed-to-seed noise and for reading
numbers off the paper's figures; the bands are stated in the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.report import Run, find_runs, mean_std
from testbed.rundir import RunDirError

PAPER_MODEL = "facebook/opt-125m"
PAPER_GENERATIONS = 9  # Fig. 1: models 0..9


@dataclass(frozen=True)
class Claim:
    """One number of the paper and the band within which a run's mean agrees with it."""

    what: str
    paper: str  # as the paper states it
    low: float
    high: float

    def holds(self, value: float) -> bool:
        return math.isfinite(value) and self.low <= value <= self.high


ZERO_SHOT = Claim("zero-shot ppl (base model)", "115", 100.0, 130.0)
GEN0 = Claim("generation 0 ppl (fine-tuned)", "34", 29.0, 39.0)
CHANGE = {
    "replace": Claim("ppl change by the last generation", "+20 to +28", 14.0, 34.0),
    "keep10": Claim("ppl change by the last generation", "minor (a few points)", -3.0, 10.0),
}
SETTINGS = {"replace": "no data kept, 5 epochs (Fig. 1a)", "keep10": "10% data kept, 10 epochs (Fig. 1b)"}


def paper_setting(run: Run) -> str | None:
    """'replace' or 'keep10' when the run's mixing is one of the paper's two, else None."""
    c = run.config
    if c.get("mixing.strategy") == "replace":
        return "replace"
    if c.get("mixing.strategy") == "fixed_fraction" and c.get("mixing.human_fraction") == 0.1:
        return "keep10"
    return None


def _ppl(run: Run, generation: int) -> float:
    return next((r["ppl_human"] for r in run.rows if r["generation"] == generation), math.nan)


@dataclass
class Check:
    setting: str
    claim: Claim
    mean: float
    std: float
    runs: int

    @property
    def holds(self) -> bool:
        return self.claim.holds(self.mean)


def checks(runs: list[Run]) -> tuple[list[Check], list[str]]:
    """Every claim for every paper setting found among `runs`, and notes on where the runs differ from
    the paper's protocol (model, number of generations)."""
    by_setting: dict[str, list[Run]] = {}
    for r in runs:
        setting = paper_setting(r)
        if setting is not None:
            by_setting.setdefault(setting, []).append(r)
    if not by_setting:
        raise RunDirError("no run of a paper setting (mixing.strategy replace, or fixed_fraction with "
                          "human_fraction 0.1) in the directories given")
    out, notes = [], []
    for setting, rs in sorted(by_setting.items(), reverse=True):
        last = min(max(row["generation"] for row in r.rows) for r in rs)
        models = sorted({str(r.config.get("model.name_or_path")) for r in rs})
        if models != [PAPER_MODEL]:
            notes.append(f"{setting}: model {', '.join(models)} (paper: {PAPER_MODEL})")
        if last != PAPER_GENERATIONS:
            notes.append(f"{setting}: change measured at generation {last} (paper: {PAPER_GENERATIONS})")
        zero = [r.rows[0].get("ppl_human_zero_shot") if r.rows else None for r in rs]
        values = [(ZERO_SHOT, zero), (GEN0, [_ppl(r, 0) for r in rs]),
                  (CHANGE[setting], [_ppl(r, last) - _ppl(r, 0) for r in rs])]
        for claim, vals in values:
            mean, std = mean_std(vals)
            out.append(Check(setting, claim, mean, std, int(np.isfinite(np.asarray(vals, dtype=float)).sum())))
    return out, notes


def _num(mean: float, std: float, signed: bool) -> str:
    if not math.isfinite(mean):
        return "missing"
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text + ("" if math.isnan(std) else f" ± {std:.1f}")


def format_checks(results: list[Check]) -> str:
    """A fixed-width table: setting, quantity, the paper's number, the band, the run's mean ± std, verdict."""
    head = ("setting", "quantity", "paper", "agrees within", "this run (mean ± std)", "runs", "holds")
    cells = [head] + [(c.setting, c.claim.what, c.claim.paper, f"[{c.claim.low:g}, {c.claim.high:g}]",
                       _num(c.mean, c.std, c.claim in CHANGE.values()), str(c.runs), "yes" if c.holds else "NO")
                      for c in results]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paper_check(paths: list[Path]) -> int:
    """Print the comparison; 0 when every claim holds, 1 otherwise."""
    results, notes = checks(find_runs(paths))
    print("Shumailov et al. (Nature 2024), OPT-125m on WikiText-2: perplexity on the human test split")
    for setting in dict.fromkeys(c.setting for c in results):
        print(f"  {setting}: {SETTINGS[setting]}")
    print()
    print(format_checks(results))
    for note in notes:
        print(f"note: {note}")
    failed = [c for c in results if not c.holds]
    print(f"\n{len(results) - len(failed)} of {len(results)} hold" + ("" if failed else ": the reproduction agrees"))
    return 1 if failed else 0
