"""Every random stream of a run, named. Each stream is the run's seed with a stage's tag (and, where it
differs by generation, the generation), mixed by numpy's SeedSequence: a resumed run draws exactly what an
uninterrupted one does, and no two stages share draws. The tags' values are part of every published number:
never renumber one."""

from __future__ import annotations

import numpy as np

GENERATE, TRAIN, EVAL, DETECT = 1, 2, 3, 4  # a generation's sampling, training order, evaluation, detection
MIX = 17  # mixing: which human and synthetic examples a generation trains on
SPREAD = 23  # data.spread: the offset of the blocks that stand for a split
# The built-in language's domains (data.language.domains): with the language's seed, domain d's ranking of the
# nouns (TOPIC, d); with the language's seed and the run's, the text of domain d >= 1 (DOMAIN_TEXT, d) and of
# the mixture of all domains (MIXTURE_TEXT). Domain 0 reads the same streams as a language of one domain.
TOPIC, DOMAIN_TEXT, MIXTURE_TEXT = 29, 31, 37
PRETRAIN = 41  # the pretrained base: its corpus draw, initialisation and data order (with pretrain.seed)
CORPUS = 43  # an extra evaluation corpus drawn from the built-in language (eval.corpora), per domain


def seed_for(seed: int, *parts: int) -> int:
    """A well-mixed 32-bit seed for one stream (for torch, which takes an int)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def rng(seed: int, *parts: int) -> np.random.Generator:
    """A numpy generator for one stream."""
    return np.random.default_rng([seed, *parts])
