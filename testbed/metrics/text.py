"""Diversity and tail metrics over sets of samples, vectorised with numpy (no Python loop over tokens).

Samples are lists of tokens, or strings split on whitespace. N-grams are mapped to dense integer ids
once; every metric is then a few `np.unique` / `np.bincount` calls over those ids.
The tail metrics (rare_ngrams, tail_coverage) instead count n-gram strings in a Counter one sample at a
time: their reference is a whole training corpus, whose distinct n-grams are far fewer than its tokens.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Samples = Sequence[str] | Sequence[Sequence]


class NGrams:
    """Dense n-gram ids of every sample, for orders 1..max_n.

    `keys[n]` gives, for each valid n-gram start position, its id; `owner[n]` the sample it belongs to.
    Ids of the same order are comparable across all samples given together.
    """

    def __init__(self, samples: Samples, max_n: int):
        seqs = [s.split() if isinstance(s, str) else list(s) for s in samples]
        self.count = len(seqs)
        self.lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        flat = list(itertools.chain.from_iterable(seqs))
        tokens = np.unique(np.asarray(flat), return_inverse=True)[1].ravel() if flat else np.zeros(0, np.int64)
        sample_of = np.repeat(np.arange(len(seqs)), self.lengths)
        vocab = int(tokens.max()) + 1 if len(tokens) else 1
        self.keys: dict[int, np.ndarray] = {}
        self.owner: dict[int, np.ndarray] = {}
        key = tokens.astype(np.int64)
        for n in range(1, max_n + 1):
            if n > 1:
                # Extend (n-1)-gram ids by one token and re-densify, so ids never overflow.
                key = np.unique(key[:-1] * vocab + tokens[n - 1 :], return_inverse=True)[1].ravel()
            starts = np.arange(len(key))
            valid = sample_of[starts] == sample_of[starts + n - 1] if len(key) else np.zeros(0, bool)
            self.keys[n] = key[valid]
            self.owner[n] = sample_of[starts[valid]]

    def per_sample_totals(self, n: int) -> np.ndarray:
        """Number of n-grams in each sample."""
        return np.maximum(self.lengths - n + 1, 0)

    def pair_counts(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample, n-gram id, count) for every n-gram present in a sample."""
        keys, owner = self.keys[n], self.owner[n]
        width = int(keys.max()) + 1 if len(keys) else 1
        pairs, counts = np.unique(owner * width + keys, return_counts=True)
        return pairs // width, pairs % width, counts


def distinct_n(samples: Samples, n: int, per_sample: bool = False) -> float:
    """Unique n-grams / total n-grams over the whole set (Li et al. 2016); or the mean of the per-sample ratio."""
    grams = NGrams(samples, n)
    keys = grams.keys[n]
    if not per_sample:
        return len(np.unique(keys)) / len(keys) if len(keys) else 0.0
    owner, _, _ = grams.pair_counts(n)
    unique = np.bincount(owner, minlength=grams.count)
    totals = grams.per_sample_totals(n)
    has = totals > 0
    return float(np.mean(unique[has] / totals[has])) if has.any() else 0.0


def rep_n(samples: Samples, n: int = 4) -> float:
    """Mean over samples of the share of n-grams that already occurred earlier in the same sample: the mean
    of `rep_n_per_sample` over samples of at least n words (0 if none)."""
    per = rep_n_per_sample(samples, n)
    per = per[~np.isnan(per)]
    return float(np.mean(per)) if len(per) else 0.0


def rep_n_per_sample(samples: Samples, n: int = 4) -> np.ndarray:
    """Each sample's share of n-grams already seen earlier in it; NaN for a sample shorter than n.

    `rep_n` is the mean of the non-NaN values.
    """
    grams = NGrams(samples, n)
    owner, _, _ = grams.pair_counts(n)
    unique = np.bincount(owner, minlength=grams.count)
    totals = grams.per_sample_totals(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 1 - unique / totals, np.nan)


def entropy(samples: Samples) -> float:
    """Entropy (bits) of the pooled unigram distribution of the samples."""
    keys = NGrams(samples, 1).keys[1]
    if not len(keys):
        return 0.0
    p = np.bincount(keys) / len(keys)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _ngram_strings(samples: Samples, n: int) -> Iterator[str]:
    """Every n-gram of every sample as one string (tokens joined by a unit separator), a sample at a time,
    so that counting them holds only the distinct n-grams, never an array of the whole corpus."""
    for s in samples:
        tokens = s.split() if isinstance(s, str) else [str(t) for t in s]
        yield from tokens if n == 1 else map("\x1f".join, zip(*(tokens[j:] for j in range(n))))


@dataclass(frozen=True)
class Tail:
    """The rare n-grams of a reference: those ranked at or beyond `rank` by descending frequency."""

    grams: np.ndarray
    n: int
    rank: int


def rare_ngrams(reference: Samples, tail_rank: int, n: int = 1) -> Tail:
    """The reference's n-grams ranked >= tail_rank by count (ties broken by the n-gram, for determinism)."""
    counts = Counter(_ngram_strings(reference, n))
    values = np.array(list(counts), dtype=str)
    order = np.lexsort((values, -np.fromiter(counts.values(), dtype=np.int64, count=len(counts))))
    return Tail(grams=values[order][tail_rank:], n=n, rank=tail_rank)


def tail_coverage(samples: Samples, tail: Tail) -> float:
    """Share of the reference's rare n-grams (see rare_ngrams) that the samples still produce; NaN if none."""
    if not len(tail.grams):
        return math.nan
    produced = set(_ngram_strings(samples, tail.n))
    return sum(g in produced for g in tail.grams.tolist()) / len(tail.grams)


def self_bleu(samples: Samples, n: int = 4) -> float:
    """Self-BLEU (Texygen): mean over i of BLEU(sample i | all other samples), uniform weights 1..n.

    Exactly nltk's sentence_bleu with SmoothingFunction().method1: clipped n-gram precision against the
    maximum count in any single other sample, brevity penalty against the closest other length (ties to
    the shorter), zero numerators smoothed to 0.1 / denominator, 0 when no unigram matches.

    Linear in the number of n-grams: the maximum count of an n-gram over all *other* samples is the top
    count over all samples, unless this sample holds the top, in which case it is the runner-up.
    """
    grams = NGrams(samples, n)
    N = grams.count
    if N < 2:
        raise ValueError("self_bleu needs at least two samples (each is scored against the others)")
    log_p = np.zeros(N)
    unigram_hits = None
    for k in range(1, n + 1):
        owner, key, count = grams.pair_counts(k)
        # Sort by n-gram, then by descending count: each group's first row holds the top count.
        order = np.lexsort((-count, key))
        owner, key, count = owner[order], key[order], count[order]
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(key)), 0))
        top = count[group_start]
        # Runner-up of each group: the count right after the group's first row, 0 if the group has one row.
        nxt = np.zeros(len(key), dtype=count.dtype)
        same_group_next = np.zeros(len(key), dtype=bool)
        same_group_next[:-1] = ~first[1:]
        nxt[:-1] = np.where(same_group_next[:-1], count[1:], 0)
        runner_up = nxt[group_start]
        max_other = np.where(first, runner_up, top)
        clipped = np.minimum(count, max_other)
        numerator = np.bincount(owner, weights=clipped, minlength=N)
        denominator = np.maximum(grams.per_sample_totals(k), 1)
        if k == 1:
            unigram_hits = numerator
        p = np.where(numerator == 0, 0.1, numerator) / denominator
        log_p += np.log(p) / n
    hyp = grams.lengths
    bp = np.where(hyp > (ref := _closest_other_length(hyp)), 1.0,
                  np.exp(1 - ref / np.maximum(hyp, 1)))
    bp[hyp == 0] = 0.0
    bleu = np.where(unigram_hits == 0, 0.0, bp * np.exp(log_p))
    return float(bleu.mean())


def _closest_other_length(lengths: np.ndarray) -> np.ndarray:
    """For each sample, the length of the other sample closest to its own (ties to the shorter)."""
    values, counts = np.unique(lengths, return_counts=True)
    idx = np.searchsorted(values, lengths)
    big = np.iinfo(np.int64).max // 4
    below = np.where(idx > 0, values[np.maximum(idx - 1, 0)], -big)
    above = np.where(idx + 1 < len(values), values[np.minimum(idx + 1, len(values) - 1)], big)
    nearest = np.where(lengths - below <= above - lengths, below, above)
    return np.where(counts[idx] >= 2, lengths, nearest)


def summarize(values: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean, median, std and 5th/95th percentiles of the finite `values`, as `{prefix}_mean` ... keys."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {f"{prefix}_{s}": math.nan for s in ("mean", "median", "std", "p05", "p95")}
    return {f"{prefix}_mean": float(v.mean()), f"{prefix}_median": float(np.median(v)),
            f"{prefix}_std": float(v.std()), f"{prefix}_p05": float(np.percentile(v, 5)),
            f"{prefix}_p95": float(np.percentile(v, 95))}
