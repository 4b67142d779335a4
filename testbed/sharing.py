"""Which runs compute the same generations: the identity rules behind shared prefixes. Two runs that agree
on the values that decide generations 0..k compute the same generations 0..k, byte for byte, so a sweep
computes them once and the other run takes them (run.prefix_from / run.prefix_until; sweep.share_prefixes,
rundir.take_generations)."""

from __future__ import annotations

import dataclasses
from typing import Any

from testbed.config import Config, flatten

# Keys that decide none of a run's generations (its name, length, bookkeeping, the sweep around it).
NOT_DECIDING = ("run.name", "run.out_dir", "run.generations", "run.keep_checkpoints", "run.prefix_from",
                "run.prefix_until", "run.log_with", "sweep.")
# Keys that generation 0 (its training and its metrics row) does not read: they act from generation 1 on.
AFTER_GEN0 = ("mixing.", "curate.", "train.init", "train.eos_between_examples", "generation.watermark.")


def prefix_values(cfg: Config, k: int) -> dict[str, Any]:
    """The values (dotted keys) that decide generations 0..k: their models, synthetic sets and metrics rows.
    Two runs that agree on them compute the same generations 0..k, so one can take them from the other
    (run.prefix_from). Generation 1 on reads every key but the bookkeeping ones, and the mixing settings of
    generations 1..k only (mixing.schedule beyond k does not matter)."""
    values = {key: v for key, v in flatten(cfg.to_dict()).items() if not key.startswith(NOT_DECIDING)}
    if k == 0:
        values = {key: v for key, v in values.items() if not key.startswith(AFTER_GEN0)}
        if cfg.train.gen0_epochs is not None:
            values.pop("train.epochs")  # generation 0 trains for gen0_epochs
        return values
    values = {key: v for key, v in values.items() if not key.startswith("mixing.")}
    return {**values, "mixing": [dataclasses.asdict(cfg.mixing.at(g)) for g in range(1, k + 1)]}


def prefix_diff(a: Config, b: Config, k: int) -> list[str]:
    """Keys whose values differ between two configs and change what generations 0..k compute."""
    va, vb = prefix_values(a, k), prefix_values(b, k)
    return sorted(key for key in va.keys() | vb.keys() if va.get(key) != vb.get(key))


def shared_prefix(a: Config, b: Config) -> int:
    """The last generation k such that runs of `a` and `b` compute the same generations 0..k; -1 if none."""
    k = -1
    while k < min(a.run.generations, b.run.generations) and not prefix_diff(a, b, k + 1):
        k += 1
    return k
