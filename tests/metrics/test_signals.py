import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from testbed.config import ModelConfig
from testbed.metrics.perplexity import perplexity, sequence_nll, token_nll
from testbed.metrics.signals import (
    effective_rank,
    effective_rank_of,
    embedding_diversity,
    frequent_tokens,
    head_tokens,
    loglik_std,
    mean_cosine_distance,
    next_token_stats,
    pooled_perplexity,
    position_nll,
    position_stats,
    ppl_gap,
    sample_perplexity,
    sequence_embeddings,
    tail_token_mass,
    unigram_kl,
    valid_tokens,
)
from testbed.metrics.text import rep_n, rep_n_per_sample
from testbed.model import build_model, train_bpe

from ..helpers.models import Counting, V


@pytest.fixture(scope="module")
def tiny():
    lines = ["the cat sat on the mat and the dog ran far away", "a quiet old house near green fields"] * 30
    tok = train_bpe(lines, 300)
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0).eval()
    ids = np.random.default_rng(0).integers(0, len(tok), size=(7, 12))
    ids[2, 5:] = -1
    ids[4, 1:] = -1  # one token: no prediction, but an embedding
    ids[5, :] = -1  # nothing at all
    return model, ids


def pooled_by_hand(model, ids: np.ndarray) -> np.ndarray:
    """Mean over valid positions of the last entry of output_hidden_states, from one unbatched forward pass."""
    mask = torch.as_tensor(ids >= 0)
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(np.where(ids >= 0, ids, 0)), attention_mask=mask.long(),
                    output_hidden_states=True)
    w = mask.unsqueeze(-1).float()
    return ((out.hidden_states[-1] * w).sum(1) / w.sum(1)).numpy()


def test_position_stats_hand_worked():
    targets = torch.tensor([[1, 2, 3]])
    nll, entropy, top = position_stats(torch.zeros(1, 4, 8), targets)
    assert torch.allclose(nll, torch.full((1, 3), math.log(8)))
    assert torch.allclose(entropy, torch.full((1, 3), math.log(8)))
    assert torch.allclose(top, torch.full((1, 3), 1 / 8))
    nll, entropy, top = position_stats(50.0 * F.one_hot(targets, 8).float(), targets)
    assert nll.abs().max() < 1e-6 and entropy.abs().max() < 1e-6 and torch.allclose(top, torch.ones(1, 3))
    # -inf logits: two tokens left, entropy log 2 (not NaN from 0 * log 0).
    two = torch.tensor([[[0.0, 0.0, -math.inf, -math.inf]]])
    nll, entropy, top = position_stats(two, torch.tensor([[1]]))
    assert entropy.item() == pytest.approx(math.log(2)) and top.item() == pytest.approx(0.5)
    assert nll.item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("chunk", [1, 7, 40, 41, 120, 10**6])  # < a row of logits, one row, rows, all
def test_position_stats_in_chunks_equal_the_whole_tensor(chunk):
    logits = torch.randn(5, 4, 40, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    targets = torch.randint(0, 40, (5, 3), generator=torch.Generator().manual_seed(1))
    nll, entropy, top = position_stats(logits, targets, chunk_elements=chunk)
    p = logits[:, :-1].float().softmax(-1)
    torch.testing.assert_close(nll, token_nll(logits, targets))
    torch.testing.assert_close(entropy, -(p * p.log()).sum(-1))
    torch.testing.assert_close(top, p.amax(-1))


def test_next_token_stats_hand_worked():
    # Predictions are made after tokens 0 1 2 3, 6 7 and 4 5: half even (certain, right), half odd (uniform).
    # Padding is neither context nor target: in its place the model sees token 0, an even one.
    blocks = np.array([[0, 1, 2, 3, 4], [6, 7, 8, -1, -1], [-1, 4, 5, 6, -1]])
    for batch_size in (1, 2, 3):
        stats = next_token_stats(Counting(), blocks, batch_size=batch_size)
        assert stats["confident_share"] == 0.5
        assert stats["token_entropy"] == pytest.approx(math.log(V) / 2)
        assert stats["perplexity"] == pytest.approx(math.sqrt(V))
    assert next_token_stats(Counting(), blocks, confident=1.01)["confident_share"] == 0.0


def test_next_token_stats_split_by_target_group():
    # Targets after an even token (1, 3, 7, 5: all odd) are certain (NLL 0); after an odd one (2, 4, 8, 6: all
    # even) uniform (NLL log V). Split by the parity of the target: perplexity 1 and V; overall sqrt(V).
    blocks = np.array([[0, 1, 2, 3, 4], [6, 7, 8, -1, -1], [-1, 4, 5, 6, -1]])
    ids = np.arange(V)
    groups = {"odd": ids % 2 == 1, "even": ids % 2 == 0, "none": ids == 15}
    for batch_size in (1, 2):
        stats = next_token_stats(Counting(), blocks, batch_size=batch_size, groups=groups)
        assert stats["perplexity_odd"] == pytest.approx(1.0)
        assert stats["perplexity_even"] == pytest.approx(V)
        assert math.isnan(stats["perplexity_none"])
        assert stats["perplexity"] == pytest.approx(math.sqrt(V))
        assert stats["block_count"]["even"].tolist() == [2, 1, 1] and stats["block_count"]["all"].tolist() == [4, 2, 2]
        assert stats["block_nll"]["even"] == pytest.approx(np.array([2, 1, 1]) * math.log(V))
    assert "perplexity_odd" not in next_token_stats(Counting(), blocks)
    assert pooled_perplexity(np.array([1.0, 3.0]), np.array([2, 2])) == pytest.approx(math.e)
    assert math.isnan(pooled_perplexity(np.zeros(2), np.zeros(2, dtype=int)))


def test_head_and_frequent_tokens_hand_worked():
    # Counts: id 5 x4, 1 x2, 3 x2, 0 x1 (9 tokens; -1 is padding).
    human = np.array([5, 1, 5, 3, 5, 1, 3, 0, 5, -1])
    assert np.flatnonzero(head_tokens(human, 8, 0.4)).tolist() == [5]  # 4/9 >= 0.4
    assert np.flatnonzero(head_tokens(human, 8)).tolist() == [1, 5]  # 4/9 < half; with id 1 (tie with 3) 6/9
    assert np.flatnonzero(head_tokens(human, 8, 1.0)).tolist() == [0, 1, 3, 5]
    assert np.flatnonzero(frequent_tokens(human, 2, 8)).tolist() == [1, 5]
    assert np.flatnonzero(frequent_tokens(human, 10, 8)).tolist() == [0, 1, 3, 5]  # never-seen ids: never frequent
    assert len(frequent_tokens(human, 2, 4)) == 4 and not head_tokens(np.array([-1]), 4).any()


def test_next_token_stats_equal_full_softmax_on_a_real_model(tiny, monkeypatch):
    model, ids = tiny
    mask = torch.as_tensor(ids >= 0)
    x = torch.as_tensor(np.where(ids >= 0, ids, 0))
    with torch.no_grad():
        p = model(input_ids=x, attention_mask=mask.long()).logits[:, :-1].float().softmax(-1)
    scored = (mask[:, 1:] & mask[:, :-1]).numpy()
    entropy = (-(p * p.log()).sum(-1)).numpy()[scored]
    top = p.amax(-1).numpy()[scored]
    monkeypatch.setattr(sys.modules["testbed.metrics.signals"], "CHUNK_ELEMENTS", 700)  # 2 positions a chunk
    for batch_size in (1, 3, 7):
        stats = next_token_stats(model, ids, batch_size=batch_size, confident=float(np.median(top)))
        assert stats["token_entropy"] == pytest.approx(entropy.mean(), rel=1e-5)
        assert stats["confident_share"] == pytest.approx(np.mean(top >= np.median(top)))
        assert stats["perplexity"] == pytest.approx(perplexity(model, ids), rel=1e-5)


def test_position_nll_hand_worked_and_summing_to_sequence_nll(tiny):
    blocks = np.array([[0, 1, 2, 3, 4], [6, 7, 8, -1, -1], [-1, 4, 5, 6, -1]])
    nll = position_nll(Counting(), blocks, batch_size=2)
    lv = math.log(V)
    want = np.array([[np.nan, 0, lv, 0, lv], [np.nan, 0, lv, np.nan, np.nan], [np.nan, np.nan, 0, lv, np.nan]])
    np.testing.assert_allclose(nll, want, atol=1e-6)
    model, ids = tiny
    sums, _ = sequence_nll(model, ids)
    np.testing.assert_allclose(np.nansum(position_nll(model, ids, batch_size=3), axis=1), sums, rtol=1e-5)


def test_sample_perplexity_and_gap():
    # Scored: after 0 1 2 (row 0, length 4) and 5 (row 1, length 2): NLL 0, log V, 0, log V.
    ids = np.array([[0, 1, 2, 3], [5, 6, 7, 8]])
    assert sample_perplexity(Counting(), ids, np.array([4, 2])) == pytest.approx(math.sqrt(V))
    assert math.isnan(sample_perplexity(Counting(), ids, np.array([1, 0])))
    assert ppl_gap(math.e**3, math.e) == pytest.approx(2.0)
    assert ppl_gap(10.0, 100.0) == pytest.approx(-math.log(10))


def test_loglik_std_is_over_per_token_means():
    # Mean log-likelihoods -2 and -3; the third sequence predicts nothing and is skipped.
    assert loglik_std(np.array([2.0, 6.0, 5.0]), np.array([1, 2, 0])) == pytest.approx(0.5)
    assert loglik_std(np.array([4.0, 8.0]), np.array([2, 4])) == 0.0  # same per token, different lengths
    assert math.isnan(loglik_std(np.array([1.0]), np.array([0])))


def test_tail_token_mass_hand_worked():
    human = np.array([[5, 5, 5, 3], [3, 1, 1, 7]])  # counts 5:3, 3:2, 1:2, 7:1
    samples = np.array([5, 3, 1, 1, 9, -1])
    assert tail_token_mass(samples, human, 2) == pytest.approx(2 / 5)  # head {5, 1}: the tie of 1 and 3 goes to 1
    assert tail_token_mass(samples, human, 10) == pytest.approx(1 / 5)  # head: every human id; 9 was never seen
    assert tail_token_mass(samples, human, 0) == 1.0
    assert math.isnan(tail_token_mass(np.array([-1]), human, 2))


def test_unigram_kl_hand_worked():
    # alpha 1: p = (3 + 1, 1 + 1) / 6, q = (2 + 1, 0 + 1) / 4.
    expected = 2 / 3 * math.log((2 / 3) / (3 / 4)) + 1 / 3 * math.log((1 / 3) / (1 / 4))
    assert unigram_kl(np.array([0, 0, 0, 1, -1]), np.array([0, 0]), 2, 1.0) == pytest.approx(expected)
    # alpha 0.5 over 3 ids: p uniform, q = (2.5, 0.5, 0.5) / 3.5.
    expected = (math.log(3.5 / 7.5) + 2 * math.log(3.5 / 1.5)) / 3
    assert unigram_kl(np.array([0, 1, 2]), np.array([0, 0]), 3, 0.5) == pytest.approx(expected)
    assert unigram_kl(np.array([[0, 1], [2, 2]]), np.array([2, 0, 2, 1]), 5, 0.1) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        unigram_kl(np.array([0, 3]), np.array([0]), 3, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        unigram_kl(np.array([0]), np.array([0]), 3, 0.0)


def test_effective_rank_of_known_singular_values():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(6, 4)))
    v, _ = np.linalg.qr(rng.normal(size=(5, 4)))
    for s, expected in (((3, 1, 0, 0), 0.75**-0.75 * 0.25**-0.25), ((2, 2, 2, 0), 3.0), ((5, 5, 5, 5), 4.0)):
        assert effective_rank_of(u @ np.diag(s) @ v.T) == pytest.approx(expected)
    assert effective_rank_of(np.eye(4)) == pytest.approx(4.0)
    assert effective_rank_of(np.eye(4) - 1 / 4) == pytest.approx(3.0)  # centred: singular values 1, 1, 1, 0
    assert effective_rank_of(np.zeros((3, 2))) == 0.0
    small = u @ np.diag([3, 1, 1e-3, 0]) @ v.T
    assert effective_rank_of(small, tol=1e-2) == pytest.approx(0.75**-0.75 * 0.25**-0.25)


def test_mean_cosine_distance_hand_worked():
    e1, e2 = np.eye(2)
    assert mean_cosine_distance(np.array([[3.0, 4.0]] * 5)) == pytest.approx(0.0, abs=1e-12)
    assert mean_cosine_distance(np.array([e1, 2 * e2])) == pytest.approx(1.0)
    assert mean_cosine_distance(np.array([e1, -e1])) == pytest.approx(2.0)
    assert mean_cosine_distance(np.array([e1, e1, e2])) == pytest.approx(2 / 3)  # cos 1, 0, 0
    assert math.isnan(mean_cosine_distance(np.array([e1])))
    x = np.random.default_rng(1).normal(size=(9, 5))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    assert mean_cosine_distance(x) == pytest.approx(1 - cos[~np.eye(9, dtype=bool)].mean())


def test_sequence_embeddings_pool_the_last_hidden_state_over_valid_positions(tiny):
    model, ids = tiny
    emb = sequence_embeddings(model, ids, batch_size=3)
    expected = pooled_by_hand(model, ids)
    np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(emb[5]).all() and np.isfinite(np.delete(emb, 5, axis=0)).all()
    # Padding (by -1 or by length) leaves a row's embedding as it is alone, unpadded.
    alone = sequence_embeddings(model, ids[2:3, :5])
    by_length = sequence_embeddings(model, np.where(ids >= 0, ids, 0), np.array([12, 12, 5, 12, 1, 0, 12]))
    np.testing.assert_allclose(emb[2], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_length[[0, 2, 4]], emb[[0, 2, 4]], rtol=1e-5, atol=1e-6)


def test_effective_rank_and_diversity_of_a_model(tiny):
    model, ids = tiny
    emb = pooled_by_hand(model, np.delete(ids, 5, axis=0)).astype(np.float64)  # row 5 is empty: skipped
    rank = effective_rank(model, ids, batch_size=2)
    assert rank == pytest.approx(effective_rank_of(emb - emb.mean(axis=0)), rel=1e-4)
    assert 1 < rank <= len(emb) - 1
    model.train()  # dropout on: the passes must switch it off, and give the mode back
    fused = next_token_stats(model, ids, batch_size=3, with_rank=True)
    assert model.training
    model.eval()
    assert fused["effective_rank"] == pytest.approx(rank, rel=1e-5)
    assert fused["perplexity"] == pytest.approx(next_token_stats(model, ids)["perplexity"], rel=1e-6)
    assert embedding_diversity(model, ids, batch_size=4) == pytest.approx(mean_cosine_distance(emb), rel=1e-4)
    same = np.repeat(ids[:1], 4, axis=0)
    assert embedding_diversity(model, same) == pytest.approx(0.0, abs=1e-6)
    assert effective_rank(model, same) == 0.0


def test_rep_n_per_sample_and_valid_tokens():
    samples = ["a b a b a", "a", "a b c"]  # bigrams ab ba ab ba: 2 of 4 repeated
    per = rep_n_per_sample(samples, 2)
    np.testing.assert_array_equal(per, [0.5, np.nan, 0.0])
    assert np.nanmean(per) == pytest.approx(rep_n(samples, 2))
    ids = np.array([[1, 2, 0], [3, 0, 0], [4, -1, 5]])
    assert valid_tokens(ids, np.array([2, 1, 3])).tolist() == [1, 2, 3, 4, 5]
