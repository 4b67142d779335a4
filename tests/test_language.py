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


def test_word_logprobs_factor_the_sentence_left_to_right():
    lang = language.build(SMALL)
    W, P = lang.words, lang.probs
    d, a, n, v, p, r = W["det"][1], W["adj"][0], W["noun"][2], W["verb"][1], W["prep"][0], W["adv"][1]
    log = np.log
    # DET ADJ ADJ NOUN VERB DET NOUN PREP DET ADJ NOUN . : each choice charged where a reader learns it.
    words = [d, a, a, n, v, d, n, p, d, a, n]
    want = [log(P["det"][1]), log(0.4 * P["adj"][0]), log(0.25 * P["adj"][0]), log(P["noun"][2]), log(P["verb"][1]),
            log(0.65 * P["det"][1]), log(0.6 * lang.object_probs(1)[2]), log(0.15 / 0.65 * P["prep"][0]),
            log(P["det"][1]), log(0.4 * P["adj"][0]), log(0.75 * P["noun"][2]), 0.0]
    assert language.word_logprobs(lang, words) == pytest.approx(want)
    assert language.word_logprobs(lang, [d, n, v])[-1] == pytest.approx(log(0.25))  # intransitive: ends
    assert language.word_logprobs(lang, [d, n, v, r])[-2:] == pytest.approx([log(0.1 * P["adv"][1]), 0.0])
    assert language.word_logprobs(lang, [d, n, v, d, n])[-1] == pytest.approx(log(0.5 / 0.65))
    assert np.all(language.word_logprobs(lang, [n, d, v]) == -math.inf)
    for s in language.sample_sentences(lang, 300, np.random.default_rng(0)):  # every shape, summing exactly
        words = s.split()[:-1]
        assert language.word_logprobs(lang, words).sum() == pytest.approx(language.sentence_logprob(lang, words))
