import itertools
import math

import numpy as np
import pytest

from testbed import language
from testbed.config import LanguageConfig

SMALL = LanguageConfig(nouns=3, verbs=2, adjectives=2, adverbs=2)


def test_deterministic_and_seeded():
    a = language.corpus(LanguageConfig(train_sentences=50, valid_sentences=5, test_sentences=5), seed=0)
    b = language.corpus(LanguageConfig(train_sentences=50, valid_sentences=5, test_sentences=5), seed=0)
    c = language.corpus(LanguageConfig(train_sentences=50, valid_sentences=5, test_sentences=5), seed=1)
    assert a == b and a["train"] != c["train"]


def test_classes_are_disjoint_and_zipf():
    lang = language.build(LanguageConfig())
    words = [w for ws in lang.words.values() for w in ws]
    assert len(words) == len(set(words))
    p = lang.probs["noun"]
    assert p.sum() == pytest.approx(1.0)
    assert p[0] / p[9] == pytest.approx(10 ** 1.1)  # Zipf exponent 1.1


def test_probabilities_of_a_rule_sum_to_the_rule_probability():
    """Summing the exact probability of every sentence of one shape gives that shape's rule probability."""
    lang = language.build(SMALL)
    W = lang.words
    # DET NOUN VERB . : P = P(no adjective) * P(intransitive VP) = 0.6 * 0.25
    total = sum(math.exp(language.sentence_logprob(lang, [d, n, v]))
                for d, n, v in itertools.product(W["det"], W["noun"], W["verb"]))
    assert total == pytest.approx(0.6 * 0.25)
    # DET NOUN VERB DET NOUN . : 0.6 * 0.5 * 0.6 (the object noun depends on the verb, still sums to 1)
    total = sum(math.exp(language.sentence_logprob(lang, [d, n, v, d2, n2]))
                for d, n, v, d2, n2 in itertools.product(W["det"], W["noun"], W["verb"], W["det"], W["noun"]))
    assert total == pytest.approx(0.6 * 0.5 * 0.6)


def test_sampled_frequencies_match_probabilities():
    lang = language.build(SMALL)
    sents = language.sample_sentences(lang, 20000, np.random.default_rng(0))
    target = [lang.words["det"][0], lang.words["noun"][0], lang.words["verb"][0]]
    freq = sum(s.split()[:-1] == target for s in sents) / len(sents)
    assert freq == pytest.approx(math.exp(language.sentence_logprob(lang, target)), rel=0.1)


def test_ungrammatical_is_impossible():
    lang = language.build(SMALL)
    W = lang.words
    assert language.sentence_logprob(lang, [W["noun"][0], W["det"][0], W["verb"][0]]) == -math.inf
    assert language.sentence_logprob(lang, ["notaword"]) == -math.inf
