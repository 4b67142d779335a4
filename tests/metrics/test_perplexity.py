import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from testbed.metrics import perplexity, sequence_nll, sequence_perplexities
from testbed.metrics.perplexity import token_nll


class Uniform(torch.nn.Module):
    """Predicts every one of V tokens with the same probability."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab) + self.dummy})()


def test_uniform_model_has_perplexity_v():
    blocks = np.random.default_rng(0).integers(0, 50, size=(7, 9))
    assert perplexity(Uniform(50), blocks, batch_size=3) == pytest.approx(50.0)


def test_padding_is_not_scored():
    ids = np.array([[1, 2, 3, -1], [4, 5, -1, -1]])
    nll, count = sequence_nll(Uniform(10), ids)
    assert count.tolist() == [2, 1]
    assert nll == pytest.approx(np.array([2, 1]) * math.log(10))
    _, count = sequence_nll(Uniform(10), np.array([[1, 2, 3, 4]]), lengths=np.array([3]))
    assert count.tolist() == [2]


def test_token_weighted_mean_and_per_sequence_agree_with_a_real_model():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_layer=1, n_embd=16, n_head=2, n_positions=16,
                                       bos_token_id=0, eos_token_id=0)).eval()
    ids = np.random.default_rng(1).integers(0, 40, size=(5, 8))
    with torch.no_grad():
        out = model(torch.as_tensor(ids), labels=torch.as_tensor(ids))
    assert perplexity(model, ids, batch_size=2) == pytest.approx(math.exp(out.loss.item()), rel=1e-5)
    per = sequence_perplexities(model, ids, batch_size=2)
    with torch.no_grad():
        first = model(torch.as_tensor(ids[:1]), labels=torch.as_tensor(ids[:1])).loss.item()
    assert per[0] == pytest.approx(math.exp(first), rel=1e-5)
    assert np.isnan(sequence_perplexities(model, ids[:1], lengths=np.array([1]))[0])


@pytest.mark.parametrize("chunk", [1, 7, 40, 41, 120, 10**6])  # < a row of logits, one row, rows, all
def test_token_nll_in_chunks_equals_cross_entropy_over_the_whole_tensor(chunk):
    logits = torch.randn(5, 4, 40, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    targets = torch.randint(0, 40, (5, 3), generator=torch.Generator().manual_seed(1))
    whole = F.cross_entropy(logits[:, :-1].float().reshape(-1, 40), targets.reshape(-1), reduction="none")
    assert torch.equal(token_nll(logits, targets, chunk_elements=chunk), whole.view(5, 3))


def test_sequence_nll_equals_the_unchunked_formula_with_padding(monkeypatch):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_layer=1, n_embd=16, n_head=2, n_positions=16,
                                       bos_token_id=0, eos_token_id=0)).eval()
    ids = np.random.default_rng(2).integers(0, 40, size=(6, 9))
    ids[1, 5:] = -1
    lengths = np.array([9, 9, 3, 1, 9, 0])
    mask = torch.as_tensor((ids >= 0) & (np.arange(9) < lengths[:, None]))
    x = torch.as_tensor(np.where(mask, ids, 0))
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=mask.long()).logits[:, :-1].float()
    per_token = F.cross_entropy(logits.reshape(-1, 40), x[:, 1:].reshape(-1), reduction="none").view(6, 8)
    target_mask = mask[:, 1:] & mask[:, :-1]
    expected = (per_token * target_mask).sum(dim=1).double().numpy()
    monkeypatch.setattr(sys.modules["testbed.metrics.perplexity"], "CHUNK_ELEMENTS", 100)  # 2 positions a chunk
    for batch_size in (1, 4, 6):
        nll, count = sequence_nll(model, ids, lengths=lengths, batch_size=batch_size)
        assert count.tolist() == [8, 4, 2, 0, 8, 0]
        np.testing.assert_allclose(nll, expected, rtol=1e-6)
        assert nll[3] == nll[5] == 0.0
