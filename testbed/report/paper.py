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

from testbed.config import Config, flatten
from testbed.report.runs import Run, find_runs, mean_std
from testbed.rundir import RunDirError

PAPER_MODEL = "facebook/opt-125m"
PAPER_GENERATIONS = 9  # Fig. 1: models 0..9

# The protocol of configs/shumailov2024-opt125m-*.yaml (tests/test_paper.py checks that they agree), key
# by key: a run that differs at any of them is not the paper's setting, whatever its numbers. Not compared:
# where data and model come from (a local copy is the same), the seed, evaluation, bookkeeping; the number
# of generations is checked as the generation the change is measured at.
PROTOCOL = {
    "data.preprocessing": "shumailov2024", "data.block_size": 64, "data.max_train_blocks": None,
    "generation.mode": "prompted", "generation.prompt_tokens": 64, "generation.max_new_tokens": 64,
    "generation.min_new_tokens": 64, "generation.num_samples": None, "generation.do_sample": False,
    "generation.num_beams": 5, "generation.repetition_penalty": 1.0, "generation.watermark.enabled": False,
    "mixing.fixed_subset": False, "mixing.complementary": False, "mixing.human_pool": "reuse",
    "curate.detector": "none", "curate.dedup": "none", "curate.perplexity_keep": 1.0, "curate.verifier": "none",
    "curate.resample": "none",
    "train.init": "base", "train.lr": 2e-5, "train.min_lr": 1e-6, "train.schedule": "cosine",
    "train.schedule_interval": "epoch", "train.warmup_steps": 0, "train.batch_size": 128, "train.grad_accum": 1,
    "train.weight_decay": 0.01, "train.weight_decay_all": True, "train.max_grad_norm": 0.0,
    "train.eos_between_examples": False, "train.select_best": True, "train.precision": "fp32",
}
SETTING_PROTOCOL = {
    "replace": {"mixing.strategy": "replace", "train.gen0_epochs": 5, "train.epochs": 5},
    "keep10": {"mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.1, "train.gen0_epochs": 10,
               "train.epochs": 10},
}


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


def _agrees(value, paper) -> bool:
    if isinstance(paper, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isclose(value, paper, rel_tol=1e-9, abs_tol=1e-12)
    return value == paper


def _show(value) -> str:
    """A value as a config writes it: true, null, 2e-05."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def deviations(runs: list[Run], setting: str) -> list[str]:
    """Each protocol key at which the runs of `setting` differ from the paper's config: 'key value (paper:
    value)', the runs' values listed when they differ among themselves."""
    defaults = flatten(Config().to_dict())
    out = []
    for key, paper in {**PROTOCOL, **SETTING_PROTOCOL[setting]}.items():
        values = [{**defaults, **r.config}.get(key) for r in runs]
        off = list(dict.fromkeys(_show(v) for v in values if not _agrees(v, paper)))
        if off:
            out.append(f"{key} {', '.join(off)} (paper: {_show(paper)})")
    return out


def checks(runs: list[Run]) -> tuple[list[Check], dict[str, list[str]], list[str]]:
    """Every claim for every paper setting found among `runs`; each setting's deviations from the paper's
    protocol; notes (the model, which a local copy names by its path)."""
    by_setting: dict[str, list[Run]] = {}
    for r in runs:
        setting = paper_setting(r)
        if setting is not None:
            by_setting.setdefault(setting, []).append(r)
    if not by_setting:
        raise RunDirError("no run of a paper setting (mixing.strategy replace, or fixed_fraction with "
                          "human_fraction 0.1) in the directories given")
    out, deviating, notes = [], {}, []
    for setting, rs in sorted(by_setting.items(), reverse=True):
        last = min(max(row["generation"] for row in r.rows) for r in rs)
        models = sorted({str(r.config.get("model.name_or_path")) for r in rs})
        if models != [PAPER_MODEL]:
            notes.append(f"{setting}: model {', '.join(models)} (paper: {PAPER_MODEL}; a local copy is fine)")
        deviating[setting] = deviations(rs, setting)
        if last != PAPER_GENERATIONS:  # run.generations, or runs not finished
            deviating[setting].append(f"change measured at generation {last} (paper: {PAPER_GENERATIONS})")
        zero = [r.rows[0].get("ppl_human_zero_shot") if r.rows else None for r in rs]
        values = [(ZERO_SHOT, zero), (GEN0, [_ppl(r, 0) for r in rs]),
                  (CHANGE[setting], [_ppl(r, last) - _ppl(r, 0) for r in rs])]
        for claim, vals in values:
            mean, std = mean_std(vals)
            out.append(Check(setting, claim, mean, std, int(np.isfinite(np.asarray(vals, dtype=float)).sum())))
    return out, deviating, notes


def _num(mean: float, std: float, signed: bool) -> str:
    if not math.isfinite(mean):
        return "missing"
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text + ("" if math.isnan(std) else f" ± {std:.1f}")


def format_checks(results: list[Check], deviating: dict[str, list[str]] | None = None) -> str:
    """A fixed-width table: setting, quantity, the paper's number, the band, the run's mean ± std, verdict
    ("yes, but deviates" where the setting's runs are not the paper's protocol)."""
    deviating = deviating or {}
    head = ("setting", "quantity", "paper", "agrees within", "this run (mean ± std)", "runs", "holds")

    def verdict(c: Check) -> str:
        return "NO" if not c.holds else "yes, but deviates" if deviating.get(c.setting) else "yes"

    cells = [head] + [(c.setting, c.claim.what, c.claim.paper, f"[{c.claim.low:g}, {c.claim.high:g}]",
                       _num(c.mean, c.std, c.claim in CHANGE.values()), str(c.runs), verdict(c)) for c in results]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paper_check(paths: list[Path]) -> int:
    """Print the comparison; 0 when every claim holds on runs of the paper's protocol, 1 otherwise."""
    results, deviating, notes = checks(find_runs(paths))
    print("Shumailov et al. (Nature 2024), OPT-125m on WikiText-2: perplexity on the human test split")
    for setting in dict.fromkeys(c.setting for c in results):
        print(f"  {setting}: {SETTINGS[setting]}")
    print()
    print(format_checks(results, deviating))
    for setting, found in deviating.items():
        for d in found:
            print(f"deviation: {setting}: {d}")
    for note in notes:
        print(f"note: {note}")
    failed = [c for c in results if not c.holds]
    n_dev = sum(map(len, deviating.values()))
    verdict = f"\n{len(results) - len(failed)} of {len(results)} hold"
    if n_dev:
        print(verdict + f", on runs that deviate from the paper's protocol at {n_dev} "
              f"{'key' if n_dev == 1 else 'keys'} (listed above): not a reproduction")
    else:
        print(verdict + ("" if failed else ": the reproduction agrees"))
    return 1 if failed or n_dev else 0
