import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from testbed.metrics.perplexity import perplexity, sequence_nll, sequence_perplexities, token_nll


class Uniform(torch.nn.Module):
    """Predicts every one of V tokens with the same probability: zero hidden states, a zero LM head."""

    def __init__(self, vocab: int):
        super().__init__()
        self.head = torch.nn.Linear(1, vocab, bias=False)
        torch.nn.init.zeros_(self.head.weight)

    def base_model(self, input_ids, attention_mask=None):
        return SimpleNamespace(last_hidden_state=torch.zeros(*input_ids.shape, 1))

    def get_output_embeddings(self):
        return self.head


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


def _full_logits_nll(model, ids: np.ndarray, valid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: cross-entropy of the model's whole logits tensor at every position (fp32), and the mask
    of the positions that are scored (a valid token after a valid one)."""
    mask = torch.as_tensor(valid)
    x = torch.as_tensor(np.where(valid, ids, 0))
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=mask.long()).logits[:, :-1].float()
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
    return per_token.view(x[:, 1:].shape), mask[:, 1:] & mask[:, :-1]


def test_sequence_nll_equals_the_unchunked_formula_with_padding(monkeypatch):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_layer=1, n_embd=16, n_head=2, n_positions=16,
                                       bos_token_id=0, eos_token_id=0)).eval()
    ids = np.random.default_rng(2).integers(0, 40, size=(6, 9))
    ids[1, 5:] = -1
    lengths = np.array([9, 9, 3, 1, 9, 0])
    per_token, target_mask = _full_logits_nll(model, ids, (ids >= 0) & (np.arange(9) < lengths[:, None]))
    expected = (per_token * target_mask).sum(dim=1).double().numpy()
    monkeypatch.setattr(sys.modules["testbed.metrics.perplexity"], "CHUNK_ELEMENTS", 100)  # 2 positions a chunk
    for batch_size in (1, 4, 6):
        nll, count = sequence_nll(model, ids, lengths=lengths, batch_size=batch_size)
        assert count.tolist() == [8, 4, 2, 0, 8, 0]
        np.testing.assert_allclose(nll, expected, rtol=1e-6)
        assert nll[3] == nll[5] == 0.0


@pytest.mark.parametrize("arch, extra", [
    ("gpt2", dict(n_layer=1, n_embd=16, n_head=2, n_positions=16)),
    # OPT-350m's shape: word embeddings narrower than the model, a project_out after the decoder.
    ("opt", dict(num_hidden_layers=1, hidden_size=16, word_embed_proj_dim=8, ffn_dim=32, num_attention_heads=2,
                 max_position_embeddings=16, do_layer_norm_before=False)),
    ("opt", dict(num_hidden_layers=1, hidden_size=16, word_embed_proj_dim=16, ffn_dim=32, num_attention_heads=2,
                 max_position_embeddings=16)),
    ("llama", dict(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                   num_key_value_heads=2, max_position_embeddings=16)),
])
def test_the_head_applied_in_chunks_gives_the_models_own_logits(arch, extra, monkeypatch):
    """Scoring applies the LM head to the final hidden states a few positions at a time: the NLL equals the
    cross-entropy of the model's whole logits, on every architecture's own path to its last hidden state."""
    from testbed.metrics.signals import next_token_stats

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, vocab_size=40, bos_token_id=0,
                                                                  eos_token_id=0, pad_token_id=0, **extra)).eval()
    ids = np.random.default_rng(3).integers(0, 40, size=(5, 10))
    ids[2, 6:] = -1
    per_token, target_mask = _full_logits_nll(model, ids, ids >= 0)
    expected = (per_token * target_mask).sum(dim=1).double().numpy()
    monkeypatch.setattr(sys.modules["testbed.metrics.perplexity"], "CHUNK_ELEMENTS", 100)  # 2 positions a chunk
    monkeypatch.setattr(sys.modules["testbed.metrics.signals"], "CHUNK_ELEMENTS", 100)
    nll, _ = sequence_nll(model, ids, batch_size=5)
    np.testing.assert_allclose(nll, expected, rtol=1e-6)
    ppl = math.exp((per_token * target_mask).sum().item() / target_mask.sum().item())
    assert next_token_stats(model, ids, batch_size=2)["perplexity"] == pytest.approx(ppl, rel=1e-6)
