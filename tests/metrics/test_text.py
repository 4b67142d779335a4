import math
import random

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from testbed.metrics.text import distinct_n, entropy, rare_ngrams, rep_n, self_bleu, summarize, tail_coverage


def nltk_self_bleu(samples, n=4):
    seqs = [s.split() if isinstance(s, str) else list(s) for s in samples]
    w = (1 / n,) * n
    sm = SmoothingFunction().method1
    return float(np.mean([sentence_bleu(seqs[:i] + seqs[i + 1 :], seqs[i], w, smoothing_function=sm)
                          for i in range(len(seqs))]))


def test_distinct_hand_worked():
    assert distinct_n(["a a b"], 1) == pytest.approx(2 / 3)
    assert distinct_n(["a a b", "a b"], 2) == pytest.approx(2 / 3)  # ab, ab, aa -> {aa, ab}
    assert distinct_n(["a a b", "c d"], 1, per_sample=True) == pytest.approx((2 / 3 + 1) / 2)
    assert distinct_n(["a"], 2) == 0.0


def test_self_bleu_hand_worked():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c d", "e f g h"]) == 0.0  # no unigram in common
    with pytest.raises(ValueError):
        self_bleu(["only one"])


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_self_bleu_matches_nltk_on_random_inputs(n):
    rng = random.Random(n)
    for _ in range(60):
        samples = [[rng.randrange(rng.randint(1, 6)) for _ in range(rng.randint(0, 9))]
                   for _ in range(rng.randint(2, 10))]
        samples.append(list(samples[0]))  # a duplicate
        samples.append([rng.randrange(3)])  # a single token
        assert self_bleu(samples, n) == pytest.approx(nltk_self_bleu(samples, n), abs=1e-9)


def test_self_bleu_matches_nltk_on_text():
    rng = random.Random(0)
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "rug", "quickly"]
    samples = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 15))) for _ in range(40)]
    assert self_bleu(samples) == pytest.approx(nltk_self_bleu(samples), abs=1e-9)


def test_rep_n_entropy():
    assert rep_n(["a b a b a b"], 2) == pytest.approx(3 / 5)  # ab ba ab ba ab: 3 repeats of 5
    assert rep_n(["a b c"], 4) == 0.0
    assert entropy(["a b", "c d"]) == pytest.approx(2.0)  # four equiprobable words
    assert entropy(["a a a"]) == 0.0


def test_tail_coverage_hand_worked():
    reference = ["a a a a b b b c c d e"]  # ranks: a b c d e ; tail beyond rank 2 = {c, d, e}
    tail = rare_ngrams(reference, tail_rank=2)
    assert sorted(tail.grams.tolist()) == ["c", "d", "e"]
    assert tail_coverage(["a c x", "d"], tail) == pytest.approx(2 / 3)
    assert tail_coverage(["a b"], tail) == 0.0
    assert math.isnan(tail_coverage(["a"], rare_ngrams(reference, tail_rank=10)))
    bigrams = rare_ngrams(["x y x y z w"], tail_rank=1, n=2)  # xy(2) then yx, yz, zw
    assert tail_coverage(["y z w"], bigrams) == pytest.approx(2 / 3)


def test_rare_ngrams_order_breaks_ties_by_the_ngram():
    # counts: b 2, c 2, a 1, d 1, e 1; the cut at rank 1 falls between the tied b and c
    assert rare_ngrams(["b a c", "c b d", "e"], tail_rank=1).grams.tolist() == ["c", "a", "d", "e"]
    # token lists: 1 2 (x2) and 2 1 (x2) tie; no bigram spans two samples (no "2 2")
    assert rare_ngrams([[1, 2, 1, 2], [2, 1]], tail_rank=0, n=2).grams.tolist() == ["1\x1f2", "2\x1f1"]
    assert rare_ngrams([], tail_rank=0).grams.tolist() == []


def reference_tail(reference, tail_rank, n):
    """rare_ngrams(...).grams spelled out in plain Python: count, sort by (-count, n-gram), cut."""
    counts = {}
    for gram in (g for s in reference for g in plain_ngrams(s, n)):
        counts[gram] = counts.get(gram, 0) + 1
    return sorted(counts, key=lambda g: (-counts[g], g))[tail_rank:]


def plain_ngrams(sample, n):
    tokens = sample.split() if isinstance(sample, str) else [str(t) for t in sample]
    return ["\x1f".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rare_ngrams_and_tail_coverage_match_plain_python_on_random_inputs(n):
    rng = random.Random(n)
    words = ["a", "b", "ab", "b a", "c", "dd", "e"]
    for _ in range(60):
        reference = [rng.choice([" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))),
                                 [rng.randrange(12) for _ in range(rng.randint(0, 12))]])
                     for _ in range(rng.randint(1, 8))]
        samples = [[rng.randrange(12) for _ in range(rng.randint(0, 10))] for _ in range(rng.randint(1, 6))]
        tail_rank = rng.randint(0, 6)
        expected = reference_tail(reference, tail_rank, n)
        tail = rare_ngrams(reference, tail_rank, n)
        assert tail.grams.tolist() == expected
        produced = {g for s in samples for g in plain_ngrams(s, n)}
        coverage = tail_coverage(samples, tail)
        if expected:
            assert coverage == pytest.approx(sum(g in produced for g in expected) / len(expected), abs=1e-12)
        else:
            assert math.isnan(coverage)


def test_summarize_ignores_nan():
    s = summarize(np.array([1.0, 2.0, 3.0, np.nan]), "x")
    assert s["x_mean"] == 2.0 and s["x_median"] == 2.0 and s["x_std"] == pytest.approx(np.std([1, 2, 3]))
