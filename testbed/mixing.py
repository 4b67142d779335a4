"""Building each generation's training set from human and synthetic examples, with provenance.

Every example carries `source` ("human" or "synthetic") and `generation` (the generation whose
synthetic step produced it; human examples carry 0).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed import rundir, seeding
from testbed.config import Config, ConfigError, MixingConfig
from testbed.data import TokenizedCorpus, pad_rows

HUMAN, SYNTHETIC = "human", "synthetic"


@dataclass
class Examples:
    """Token-id examples padded to a common width, with their true lengths, provenance, and the detector's
    view of each (decided once per example, so a text keeps its verdict in every pool it enters)."""

    ids: np.ndarray  # (n, width) int64
    lengths: np.ndarray  # (n,) int64
    source: np.ndarray  # (n,) str
    generation: np.ndarray  # (n,) int64
    z: np.ndarray = None  # (n,) watermark z-score, NaN when not scored
    flagged: np.ndarray = None  # (n,) bool: the detector flags it

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.z = np.full(n, np.nan) if self.z is None else self.z
        self.flagged = np.zeros(n, dtype=bool) if self.flagged is None else self.flagged

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: np.ndarray) -> Examples:
        return Examples(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def composition(self) -> dict[str, int]:
        """Counts per provenance, e.g. {'human': 100, 'synthetic@1': 50}."""
        keys = [s if s == HUMAN else f"{s}@{g}" for s, g in zip(self.source, self.generation)]
        return dict(sorted(Counter(keys).items()))


def human_examples(blocks: np.ndarray) -> Examples:
    n, width = blocks.shape
    return Examples(blocks.astype(np.int64), np.full(n, width), np.full(n, HUMAN), np.zeros(n, dtype=np.int64))


def synthetic_examples(ids: np.ndarray, lengths: np.ndarray, generation: int) -> Examples:
    n = len(ids)
    return Examples(ids.astype(np.int64), lengths.astype(np.int64), np.full(n, SYNTHETIC),
                    np.full(n, generation, dtype=np.int64))


def concat(parts: list[Examples]) -> Examples:
    """Stack examples of possibly different widths (padding with 0 beyond each length)."""
    width = max(p.ids.shape[1] for p in parts)
    ids = np.zeros((sum(len(p) for p in parts), width), dtype=np.int64)
    row = 0
    for p in parts:
        ids[row : row + len(p), : p.ids.shape[1]] = p.ids
        row += len(p)
    rest = [np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Examples)[1:]]
    return Examples(ids, *rest)


def human_share(cfg: MixingConfig, total: int) -> int:
    """fixed_fraction: the number of human examples in a training set of `total` examples."""
    return int(round(cfg.human_fraction * total))


def fresh_drawn(cfg: MixingConfig, per_generation: int, generations: int, cap: int) -> int:
    """How many unseen human blocks generations 1..`generations` draw (human_pool=fresh), each drawing the
    human share of its own settings (at most `cap`, the size of the human set)."""
    settings = [cfg.at(g) for g in range(1, generations + 1)]
    return sum(min(human_share(s, per_generation), cap) for s in settings
               if s.strategy == "fixed_fraction" and s.human_pool == "fresh")


def human_sets(cfg: Config, corpus: TokenizedCorpus) -> tuple[Examples, Examples]:
    """The run's human examples: generation 0's training blocks (the human part of every mix), and the unseen
    blocks a fresh human pool draws from, checked to hold all that the run will draw."""
    human, fresh = human_examples(corpus.train), human_examples(corpus.train_pool)
    check_fresh_pool(cfg.mixing, cfg.generation.num_samples or len(human), cfg.run.generations, len(fresh),
                     cap=len(human))
    return human, fresh


def check_fresh_pool(cfg: MixingConfig, per_generation: int, generations: int, pool: int, cap: int) -> None:
    """human_pool=fresh draws unseen blocks in each generation that uses it: the pool must hold them all."""
    need = fresh_drawn(cfg, per_generation, generations, cap)
    if need > pool:
        raise ConfigError(f"config key 'mixing.human_pool': fresh needs {need} unseen human blocks over "
                          f"{generations} generations (mixing.human_fraction x examples per generation, in each "
                          f"generation that draws fresh blocks), but the training split holds {pool} beyond "
                          "data.max_train_blocks: lower data.max_train_blocks, or give more training text")


def accumulates(cfg: MixingConfig, generation: int) -> bool:
    """Whether earlier generations' synthetic data stays in `generation`'s pool (accumulate strategies)."""
    return cfg.at(generation).strategy in ("accumulate", "accumulate_subsample")


def mix(cfg: MixingConfig, human: Examples, synthetic: list[Examples], generation: int, seed: int,
        fresh: Examples | None = None, total: int | None = None, pretraining: Examples | None = None) -> Examples:
    """The training set of `generation` (>= 1) given all synthetic sets so far (synthetic[-1] is this one's,
    after curation; `total`: how many were generated, by default as many), under the mixing settings of
    that generation (`cfg.at(generation)`: mixing.schedule applied).

    replace: this generation's synthetic set. fixed_fraction: `total` examples, a share `human_fraction`
    of them human — a fresh draw from `human` each generation, one fixed subset, or (human_pool=fresh) the
    next unseen blocks of `fresh`, which no earlier generation saw, or (human_pool=pretrain) a fresh draw from
    the pretraining corpus's blocks `pretraining` — and the rest synthetic, as far as
    curation left enough (with `complementary`: the continuations of exactly the human blocks not drawn).
    accumulate: all human data plus every synthetic set so far.
    accumulate_subsample: that pool subsampled to the size of the human set.
    """
    rng = seeding.rng(seed, generation, seeding.MIX)
    current = synthetic[-1]
    settings = cfg.at(generation)
    if settings.strategy == "replace":
        return current
    if settings.strategy == "fixed_fraction":
        total = len(current) if total is None else total
        n_human = min(human_share(settings, total), len(human))
        if settings.human_pool == "pretrain":
            n_human = min(human_share(settings, total), len(pretraining))
            human_part = pretraining.take(np.sort(rng.permutation(len(pretraining))[:n_human]))
        elif settings.human_pool == "fresh":
            order = seeding.rng(seed, seeding.MIX).permutation(len(fresh))  # one order for the whole run
            start = fresh_drawn(cfg, total, generation - 1, len(human))  # what earlier generations drew
            human_part = fresh.take(np.sort(order[start : start + n_human]))
        else:
            human_rng = seeding.rng(seed, seeding.MIX) if settings.fixed_subset else rng
            taken = np.sort(human_rng.permutation(len(human))[:n_human])
            human_part = human.take(taken)
            if settings.complementary:  # current[i] continues human block i: the blocks not taken, as continuations
                if len(current) != len(human):
                    raise ConfigError(f"config key 'mixing.complementary': {len(current)} continuations for "
                                      f"{len(human)} human blocks")
                return concat([human_part, current.take(np.setdiff1d(np.arange(len(current)), taken))])
        synth_part = current.take(np.sort(rng.permutation(len(current))[: total - n_human]))
        return concat([human_part, synth_part])
    pool = concat([human, *synthetic])
    if settings.strategy == "accumulate":
        return pool
    return pool.take(np.sort(rng.permutation(len(pool))[: len(human)]))


def save_synthetic(path: Path, examples: Examples, texts: list[str], columns: dict[str, np.ndarray]) -> None:
    """One generation's synthetic set as a `datasets` dataset (Arrow, memory-mapped when loaded): columns
    index, text, input_ids, source, generation, and `columns` (e.g. ppl_gen0, curation decisions).
    Written atomically (rundir.write_dir): a kill leaves the old set or the new one."""
    import datasets

    datasets.disable_progress_bars()
    ids = [row[:n] for row, n in zip(examples.ids.tolist(), examples.lengths.tolist())]
    data = {"index": np.arange(len(examples)), "text": texts, "input_ids": ids, "source": examples.source.tolist(),
            "generation": examples.generation, **{k: np.asarray(v) for k, v in columns.items()}}
    dataset = datasets.Dataset.from_dict(data)
    rundir.write_dir(path, lambda tmp: dataset.save_to_disk(str(tmp)))


def load_synthetic(path: Path) -> Examples:
    """The synthetic examples saved by `save_synthetic` that curation kept (column `dropped_by` empty or
    absent), with their provenance and the detector's view of them."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    columns = set(ds.column_names)
    if "dropped_by" in columns:
        # In memory: a cache file would add to a finished generation's folder (and a shared one's source).
        ds = ds.filter(lambda d: [x == "" for x in d], input_columns="dropped_by", batched=True,
                       keep_in_memory=True)
    rows = ds["input_ids"][:]
    return Examples(pad_rows(rows, fill=0), np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)),
                    np.asarray(ds["source"][:], dtype=object).astype(str), np.asarray(ds["generation"][:], np.int64),
                    np.asarray(ds["z_score"][:], float) if "z_score" in columns else None,
                    np.asarray(ds["flagged"][:], bool) if "flagged" in columns else None)


def synthetic_texts(path: Path) -> tuple[list[str], np.ndarray]:
    """The texts of a synthetic set saved by `save_synthetic`, each with its curation decision (`dropped_by`:
    the filter that dropped it, empty when kept)."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    dropped = ds["dropped_by"][:] if "dropped_by" in ds.column_names else [""] * len(ds)
    return ds["text"][:], np.asarray(dropped, dtype=object).astype(str)
