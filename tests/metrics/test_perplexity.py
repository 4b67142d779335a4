import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from testbed.metrics import perplexity, sequence_nll, sequence_perplexities


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
