"""Phases of collapse: early collapse loses the tails, late collapse narrows the head too.

The rule, over a metrics row against generation 0's row and a noise band (a half-width per signal):

- a signal has *left the band* when it moved from its generation-0 value by more than its half-width in the
  direction of collapse (`SIGNALS`: +1 where a rise is damage, -1 where a fall is, from the metric
  registry's `higher_is_better`; the registry's `role` says which signals are head, tail and variance);
  moves the other way, and
  signals missing from the row or the band, do not count;
- `late`: a head signal (`HEAD`) and a variance signal (`VARIANCE`) have both left the band;
- `early`: a tail signal (`TAIL`) has left the band and the row is not late (the head may have started to
  move, but the distribution has not narrowed yet);
- `none`: otherwise.

Phases are not forced to be monotone: a run healed with human data can return to `none`.

The band is NOISE_SIGMAS standard deviations of generation 0's noise, the same band as the report's
early-warning table: across seeds when a setting has several (`seed_band`), and for a single run the
bootstrap std over its evaluation samples and test blocks that generation 0's row carries as `noise_<signal>`
(`row_band`; see evaluation.bootstrap_noise).
"""

from __future__ import annotations

import math

import numpy as np

from testbed.metrics import registry


def _damage(role: str) -> dict[str, int]:
    """Signal -> the direction of damage (+1: a rise, -1: a fall) of the registry's signals of one role."""
    return {m.key: -1 if m.higher_is_better else +1 for m in registry.with_role(role)}


TAIL = _damage(registry.TAIL)
HEAD = _damage(registry.HEAD)
VARIANCE = _damage(registry.VARIANCE)
SIGNALS = {**TAIL, **HEAD, **VARIANCE}
NOISE_SIGMAS = 2.0
PHASES = ("none", "early", "late")


def _finite(*values) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def left_band(row: dict, row0: dict, band: dict[str, float]) -> set[str]:
    """The signals of `row` that moved from `row0` by more than `band[signal]` in the direction of damage."""
    return {k for k, sign in SIGNALS.items()
            if _finite(row.get(k), row0.get(k), band.get(k)) and sign * (row[k] - row0[k]) > band[k]}


def phase(row: dict, row0: dict, band: dict[str, float]) -> str:
    """none | early | late of one row against generation 0's row (see the module's rule)."""
    moved = left_band(row, row0, band)
    if moved & HEAD.keys() and moved & VARIANCE.keys():
        return "late"
    return "early" if moved & TAIL.keys() else "none"


def phases(rows: list[dict], band: dict[str, float]) -> list[str]:
    """The phase of each row of one run (or of a setting's mean rows), against the generation-0 row."""
    row0 = next((r for r in rows if r.get("generation") == 0), None)
    return ["none" if row0 is None else phase(r, row0, band) for r in rows]


def row_band(row0: dict, sigmas: float = NOISE_SIGMAS) -> dict[str, float]:
    """A single run's band: `sigmas` x the bootstrap std that generation 0's row carries as `noise_<signal>`."""
    return {k: sigmas * row0[f"noise_{k}"] for k in SIGNALS if _finite(row0.get(f"noise_{k}"))}


def seed_band(rows0: list[dict], sigmas: float = NOISE_SIGMAS) -> dict[str, float]:
    """A setting's band: `sigmas` x the std (ddof 1) across the generation-0 rows of several seeds."""
    band = {}
    for k in SIGNALS:
        values = [r[k] for r in rows0 if _finite(r.get(k))]
        if len(values) > 1:
            band[k] = sigmas * float(np.std(values, ddof=1))
    return band


def first_generations(generations: list[int], labels: list[str]) -> dict[str, int | None]:
    """The first generation in each phase other than none (None: never reached); late also counts as having
    reached early."""
    first: dict[str, int | None] = {"early": None, "late": None}
    for g, label in zip(generations, labels):
        for p in ("early", "late")[: PHASES.index(label)]:
            if first[p] is None:
                first[p] = g
    return first
