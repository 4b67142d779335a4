import math

import numpy as np
import pytest

from testbed.evaluation import FREQUENT, RARE, GroundTruth, bootstrap_noise, ground_truth_set, word_groups, word_metrics

from .helpers.models import Counting, V


def test_bootstrap_noise_is_the_std_over_resamples():
    x = np.array([0.0, 1.0] * 100)
    noise = bootstrap_noise(len(x), {"mean": lambda b: x[b].mean(), "const": lambda b: 3.0,
                                     "nan": lambda b: math.nan}, seed=0, resamples=400)
    assert noise["noise_mean"] == pytest.approx(math.sqrt(0.25 / 200), rel=0.15)  # the binomial standard error
    assert noise["noise_const"] == 0.0 and math.isnan(noise["noise_nan"])
    again = bootstrap_noise(len(x), {"mean": lambda b: x[b].mean()}, seed=0, resamples=400)
    assert again["noise_mean"] == noise["noise_mean"]  # seeded: a resumed run gets the same band


def test_word_groups_hand_worked():
    vocab, p = np.array(["a", "b", "c", "d"]), np.array([0.3, 0.4, 0.2, 0.1])
    # By probability: b (0.4), a (0.7 >= half): frequent; rank >= 3: d rare; c neither.
    assert word_groups(vocab, p, 3) == {"a": FREQUENT, "b": FREQUENT, "c": 0, "d": RARE}
    assert word_groups(vocab, p, 1)["a"] == FREQUENT  # frequent wins where both apply


def test_word_metrics_split_kl_per_word_by_word():
    # Counting: after an even token the next is certain (NLL 0 if it is token + 1), after an odd one uniform
    # (log V). Row 0 scores 1 (0), 2 (log V), 3 (0); row 1 scores 3 (0), 4 (log V).
    gt = GroundTruth(None, None, None, sentence_ids=np.array([[0, 1, 2, 3], [2, 3, 4, -1]]),
                     sentence_logp=np.array([-3.0, -3.5]), sentence_words=np.array([2, 2]),
                     word_of_token=np.array([[-1, 0, 0, 1], [-1, 0, 1, -1]]),
                     word_logp=np.array([[-1.0, -2.0], [-0.5, -3.0]]),
                     word_group=np.array([[RARE, FREQUENT], [FREQUENT, RARE]]))
    row = word_metrics(Counting(), gt, batch_size=1)
    lv = math.log(V)
    # Word NLLs: row 0: log V and 0; row 1: 0 and log V. Excess = NLL + log P.
    assert row["excess_nll_rare_words"] == pytest.approx(((lv - 1) + (lv - 3)) / 2)
    assert row["excess_nll_frequent_words"] == pytest.approx((-2 - 0.5) / 2)
    assert row["kl_per_word"] == pytest.approx((2 * lv - 6.5) / 4)  # the mean excess over all four words
    gt.word_of_token = None  # a tokenizer without offsets: no split
    assert set(word_metrics(Counting(), gt, batch_size=2)) == {"kl_per_word"}


def test_ground_truth_maps_tokens_to_words():
    from testbed import language
    from testbed.config import Config
    from testbed.model import train_bpe

    cfg = Config()
    lines = language.corpus(cfg.data.language, seed=0)["test"][:3]
    tokenizer = train_bpe(language.corpus(cfg.data.language, seed=1)["train"][:200], 300)
    gt = ground_truth_set(cfg, lines, tokenizer, max_sentences=10)
    for i in range(len(gt.sentence_ids)):
        n_words = int(gt.sentence_words[i])
        words = [tokenizer.decode(gt.sentence_ids[i][gt.word_of_token[i] == w]).strip() for w in range(n_words)]
        assert words[-1] == "." and all(words)
        assert gt.word_logp[i, :n_words].sum() == pytest.approx(gt.sentence_logp[i])
        assert language.word_logprobs(gt.lang, words[:-1]) == pytest.approx(gt.word_logp[i, :n_words])
        assert gt.word_of_token[i, 0] == -1 and np.isnan(gt.word_logp[i, n_words:]).all()


def test_ground_truth_of_a_domain_and_of_the_mixture():
    from testbed import language
    from testbed.config import Config
    from testbed.model import train_bpe

    cfg = Config()
    cfg.data.language.domains = 2
    lines = language.corpus(cfg.data.language, seed=0, domain=1)["test"][:2]
    tokenizer = train_bpe(lines, 300)
    gts = {d: ground_truth_set(cfg, lines, tokenizer, max_sentences=8, domain=d) for d in (None, 1, "all")}
    assert isinstance(gts["all"].lang, language.Mixture)
    assert np.array_equal(gts[1].lang.probs["noun"], language.build(cfg.data.language, 1).probs["noun"])
    for gt in gts.values():
        assert gt.word_p.sum() == pytest.approx(1.0)
        assert np.nansum(gt.word_logp, axis=1) == pytest.approx(gt.sentence_logp)
    # Domain 1's text is likelier in its own domain than in domain 0; the mixture's is the mean of the two.
    assert gts[1].sentence_logp.sum() > gts[None].sentence_logp.sum()
    assert gts["all"].sentence_logp == pytest.approx(np.logaddexp(gts[None].sentence_logp, gts[1].sentence_logp)
                                                     - np.log(2))
