"""Which runs compute the same generations: the identity rules behind shared prefixes. Two runs that agree
on the values that decide generations 0..k compute the same generations 0..k, byte for byte, so a sweep
computes them once and the other run takes them (run.prefix_from / run.prefix_until; sweep.share_prefixes,
rundir.take_generations). The pretrained base is generation -1 (rundir.BASE): runs that agree on what
decides it share it, even when their generation 0 differs (another run.seed, another fine-tuning domain)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from testbed import rundir
from testbed.config import Config, ConfigError, flatten, from_dict, read_yaml
from testbed.rundir import BASE

# Keys that decide none of a run's generations (its name, length, bookkeeping, the sweep around it).
NOT_DECIDING = ("run.name", "run.out_dir", "run.generations", "run.keep_checkpoints", "run.prefix_from",
                "run.prefix_until", "run.log_with", "sweep.")
# Keys that generation 0 (its training and its metrics row) does not read: they act from generation 1 on.
AFTER_GEN0 = ("mixing.", "curate.", "train.init", "train.eos_between_examples", "generation.watermark.")
# Keys of generation 0 that the pretrained base does not read (pretrain trains with its own epochs and lr, no
# best-checkpoint selection and no LoRA, on its own corpus and seed), except BASE_DATA.
NOT_BASE = ("run.seed", "data.", "generation.", "eval.", "train.epochs", "train.gen0_epochs", "train.lr",
            "train.select_best", "train.eval_every", "train.lora.")
# What the base reads of the data section: its blocks, its text's preprocessing, and the built-in language
# whose mixture of domains it learns (not the fine-tuning domain or the sizes of the human splits).
BASE_DATA = ("data.block_size", "data.preprocessing", "data.language.seed", "data.language.nouns",
             "data.language.verbs", "data.language.adjectives", "data.language.adverbs",
             "data.language.zipf_exponent", "data.language.domains", "data.language.sentences_per_line")
NONE = -2  # shared_prefix: nothing shared


def shared_part(k: int) -> str:
    """What a run that takes generations 0..k takes, in words."""
    return "the pretrained base" if k == BASE else f"generations 0..{k}"


def prefix_values(cfg: Config, k: int) -> dict[str, Any]:
    """The values (dotted keys) that decide generations 0..k: their models, synthetic sets and metrics rows.
    Two runs that agree on them compute the same generations 0..k, so one can take them from the other
    (run.prefix_from). Generation 1 on reads every key but the bookkeeping ones, and the mixing settings of
    generations 1..k only (mixing.schedule beyond k does not matter). k = BASE: the values that decide the
    pretrained base (none without pretraining)."""
    values = {key: v for key, v in flatten(cfg.to_dict()).items() if not key.startswith(NOT_DECIDING)}
    if k == BASE:
        if cfg.pretrain.source == "none":
            return {"pretrain.source": "none"}  # no base is computed: nothing to share
        values = prefix_values(cfg, 0)
        return {key: v for key, v in values.items() if key in BASE_DATA or not key.startswith(NOT_BASE)}
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
    """The last generation k such that runs of `a` and `b` compute the same generations 0..k (BASE: only the
    pretrained base); NONE if not even that."""
    pretrained = a.pretrain.source != "none" and b.pretrain.source != "none"
    k = BASE if pretrained and not prefix_diff(a, b, BASE) else NONE
    if pretrained and k == NONE:
        return NONE  # another base: no generation agrees
    while k < min(a.run.generations, b.run.generations) and not prefix_diff(a, b, max(k + 1, 0)):
        k = max(k + 1, 0)
    return k


def check_prefix(cfg: Config, run: Path) -> Path | None:
    """The run whose generations 0..run.prefix_until this run takes (run.prefix_from), checked before any work:
    complete, computed with the same values of everything those generations depend on, its model k kept.
    None when there is nothing to take (no prefix_from, or a resume that holds its prefix already)."""
    if not cfg.run.prefix_from:
        return None
    source, k = Path(cfg.run.prefix_from), cfg.run.prefix_until
    if rundir.has_prefix(run, k):  # taken before (a resume): the source need not exist any more
        return None
    if not rundir.has_prefix(source, k):
        raise rundir.RunDirError(f"run.prefix_from: {source} has not completed " + (
            "its pretrained base" if k == rundir.BASE else f"generations 0..{k}"))
    differ = prefix_diff(from_dict(read_yaml(source / "config.yaml")), cfg, k)
    if differ:
        raise ConfigError(f"config key 'run.prefix_from': {source} computed generations 0..{k} with other "
                          f"values of {', '.join(differ)}")
    if not (rundir.gen_dir(source, k) / "model").is_dir():
        raise rundir.RunDirError(f"run.prefix_from: {source} no longer holds the model of generation {k} "
                          "(run.keep_checkpoints removed it)")
    return source
