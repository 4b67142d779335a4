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


# Domains: the default language with two topics, and a tiny one small enough to enumerate every sentence.
TWO = LanguageConfig(domains=2)
FIRST_SENTENCE = "gigisazu vobarezi nate gigisazu di roku"  # corpus(LanguageConfig(), seed=0): one domain


def test_domain_0_of_several_is_the_language_of_one_domain():
    one = language.build(LanguageConfig())
    for lang in (language.build(TWO), language.build(LanguageConfig(domains=3), 0)):
        assert lang.words == one.words and np.array_equal(lang.object_rank, one.object_rank)
        assert all(np.array_equal(lang.probs[c], one.probs[c]) for c in one.probs)
    lines = language.corpus(LanguageConfig(), seed=0)
    assert lines["train"][0].startswith(FIRST_SENTENCE + " . ")
    assert language.corpus(TWO, seed=0) == lines
    other = language.corpus(TWO, seed=0, domain=1)["train"]
    assert other[0].split(" . ")[0] != FIRST_SENTENCE
    assert language.corpus(TWO, seed=0, domain="all")["train"][0] not in (lines["train"][0], other[0])
    assert language.corpus(LanguageConfig(domains=2, domain=1), seed=0)["train"] == other


def test_domains_differ_only_in_the_ranking_of_the_nouns():
    d0, d1 = language.build(TWO, 0), language.build(TWO, 1)
    assert all(np.array_equal(d0.probs[c], d1.probs[c]) for c in d0.probs if c != "noun")
    assert np.array_equal(np.sort(d0.probs["noun"]), np.sort(d1.probs["noun"]))  # the same Zipf law, re-ranked
    # Domain 1's most probable nouns are mostly rare in domain 0: its top 10 hold 47% of its own noun mass and
    # 2.0% of domain 0's; its top 50 hold 68% and 33% (two of domain 0's top 3 are among them).
    top = np.argsort(-d1.probs["noun"])
    assert d1.probs["noun"][top[:10]].sum() == pytest.approx(0.4732, abs=1e-4)
    assert d0.probs["noun"][top[:10]].sum() < 0.021 and d0.probs["noun"][top[:50]].sum() < 0.33
    with pytest.raises(ValueError, match="domain 2 is not in 0..1"):
        language.build(TWO, 2)


def test_unigram_probabilities_of_each_domain_and_the_mixture():
    langs = [language.build(TWO, 0), language.build(TWO, 1)]
    probs = [language.word_probabilities(lang) for lang in langs]
    mix = language.word_probabilities(language.build(TWO, "all"))
    assert probs[0][language.END] == probs[1][language.END]  # the same expected sentence length
    for p in (*probs, mix):
        assert sum(p.values()) == pytest.approx(1.0)
    assert mix == pytest.approx({w: (probs[0][w] + probs[1][w]) / 2 for w in mix})
    assert max(abs(probs[0][w] - probs[1][w]) for w in mix) > 0.03  # the top nouns differ (0.038 at most)
    one = language.build(LanguageConfig(), "all")  # with one domain, "all" is a mixture of one: that domain
    assert len(one.domains) == 1 and language.word_probabilities(one) == probs[0]


def _every_sentence(lang) -> list[list[str]]:
    W = lang.words
    nps = [[d, *adj, n] for d in W["det"] for k in range(3) for adj in itertools.product(W["adj"], repeat=k)
           for n in W["noun"]]
    subject_verb = [[*s, v] for s in nps for v in W["verb"]]
    return [*subject_verb, *([*sv, r] for sv in subject_verb for r in W["adv"]),
            *([*sv, *o] for sv in subject_verb for o in nps),
            *([*sv, *o, p, *x] for sv in subject_verb for o in nps for p in W["prep"] for x in nps)]


def test_every_sentence_enumerated_sums_to_one_in_each_domain_and_the_mixture(monkeypatch):
    monkeypatch.setattr(language, "N_DETERMINERS", 1)
    monkeypatch.setattr(language, "N_PREPOSITIONS", 1)
    cfg = LanguageConfig(nouns=3, verbs=2, adjectives=1, adverbs=2, domains=2)
    mix = language.build(cfg, "all")
    sents = _every_sentence(mix)
    assert len(sents) == 1674
    for lang in (*mix.domains, mix):
        p = np.exp([language.sentence_logprob(lang, s) for s in sents])
        assert p.sum() == pytest.approx(1.0)
    # The expected count of each word per sentence over the expected length: the mixture's unigram law.
    length = (p * np.array([len(s) + 1 for s in sents])).sum()
    counts = {w: sum(pi * s.count(w) for pi, s in zip(p, sents)) / length for w in mix.lookup}
    assert counts == pytest.approx({w: q for w, q in language.word_probabilities(mix).items() if w != "."})
    assert not np.allclose(mix.domains[0].probs["noun"], mix.domains[1].probs["noun"])


def _chi_square_p(sents: list[str], probs: dict[str, float]) -> float:
    """p-value of the words' counts against `probs` (words expected fewer than 20 times pooled)."""
    from scipy.stats import chisquare

    words = [w for s in sents for w in s.split()]
    seen = dict(zip(*np.unique(words, return_counts=True)))
    expected = np.array([probs[w] for w in probs]) * len(words)
    observed = np.array([seen.get(w, 0) for w in probs])
    big = expected >= 20
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    return float(chisquare(obs, exp).pvalue)


def test_sampled_words_match_the_exact_unigram_law_per_domain_and_in_the_mixture():
    d0, d1, mix = (language.build(TWO, d) for d in (0, 1, "all"))
    p0, p1 = language.word_probabilities(d0), language.word_probabilities(d1)
    from_1 = language.sample_sentences(d1, 8000, np.random.default_rng(1))
    from_mix = language.sample_sentences(mix, 8000, np.random.default_rng(2))
    assert _chi_square_p(from_1, p1) > 1e-3
    assert _chi_square_p(from_mix, language.word_probabilities(mix)) > 1e-3
    # The test has the power to see a wrong ranking or wrong mixture weights (0.6 / 0.4):
    assert _chi_square_p(from_1, p0) < 1e-10
    assert _chi_square_p(from_mix, {w: 0.6 * p0[w] + 0.4 * p1[w] for w in p0}) < 1e-6


def test_mixture_word_logprobs_weigh_the_domains_by_their_posterior():
    mix = language.build(TWO, "all")
    d0, d1 = mix.domains
    W = mix.words
    d, n, v, o = W["det"][0], W["noun"][0], W["verb"][3], W["noun"][5]
    lp = language.word_logprobs(mix, [d, n, v, d, o])
    p_n = np.array([d0.probs["noun"][0], d1.probs["noun"][0]])
    assert lp[1] == pytest.approx(np.log(0.6 * p_n.mean()))  # the subject noun (no adjective): the domains' mean
    assert lp[2] == pytest.approx(np.log(d0.probs["verb"][3]))  # the verb: shared by every domain
    obj = np.array([d0.object_probs(3)[5], d1.object_probs(3)[5]])
    assert lp[4] == pytest.approx(np.log(0.6 * (p_n / p_n.sum()) @ obj))  # the object: by the posterior
    assert lp.sum() == pytest.approx(language.sentence_logprob(mix, [d, n, v, d, o]))
    assert language.sentence_logprob(mix, [d, n, v, d, o]) == pytest.approx(
        np.log(np.mean([np.exp(language.sentence_logprob(x, [d, n, v, d, o])) for x in (d0, d1)])))
    for s in language.sample_sentences(mix, 200, np.random.default_rng(0)):
        words = s.split()[:-1]
        assert language.word_logprobs(mix, words).sum() == pytest.approx(language.sentence_logprob(mix, words))
    assert np.all(language.word_logprobs(mix, [o, d, v]) == -math.inf)
    assert language.sentence_logprob(mix, [o, d, v]) == -math.inf
