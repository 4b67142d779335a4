"""Batches that fit: a batch that runs out of device memory is redone in halves, with the same numbers."""

import numpy as np
import pytest
import torch

from testbed import batching
from testbed.config import GenerationConfig, ModelConfig
from testbed.generate import generate
from testbed.metrics.perplexity import sequence_nll
from testbed.metrics.signals import next_token_stats
from testbed.model import build_model, train_bpe


@pytest.fixture(scope="module")
def tiny():
    tok = train_bpe(["the cat sat on a mat while dogs ran past"] * 20, 300)
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=64), tok, seed=0).eval()
    prompts = np.random.default_rng(0).integers(1, len(tok), size=(12, 5))
    return tok, model, prompts


@pytest.fixture
def fresh():
    batching.reset()
    yield
    batching.reset()


def _out_of_memory_above(model, monkeypatch, rows: int) -> list[int]:
    """Make every forward pass of more than `rows` rows raise CUDA's out-of-memory error; return the row
    counts of the passes that ran."""
    forward, seen = model.forward, []

    def limited(*args, **kwargs):
        n = kwargs["input_ids"].shape[0]
        if n > rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB for {n} rows")
        seen.append(n)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", limited)
    return seen


@pytest.mark.parametrize("g", [GenerationConfig(do_sample=True, top_p=0.9, temperature=1.5),
                               GenerationConfig(do_sample=False, num_beams=3)], ids=["sampling", "beam-3"])
def test_generation_retried_at_a_smaller_batch_gives_the_same_continuations(tiny, fresh, monkeypatch, g):
    tok, model, prompts = tiny
    expected, lengths = generate(model, prompts, g, 6, 8, seed=5, eos=tok.eos_token_id)
    batching.reset()
    seen = _out_of_memory_above(model, monkeypatch, 3 * g.num_beams)
    got, got_lengths = generate(model, prompts, g, 6, 8, seed=5, eos=tok.eos_token_id)
    assert np.array_equal(got, expected) and np.array_equal(got_lengths, lengths)
    # 8 -> 4 -> 2 rows fit; the batch that fit is kept for the rest (and for the next call).
    assert set(seen) == {2 * g.num_beams} and batching.used() == {"generate": {"8": 2}}
    assert batching.fitted("generate", 8) == 2 and batching.fitted("generate", 64) == 64


def test_scoring_retried_at_a_smaller_batch_gives_the_same_numbers(tiny, fresh, monkeypatch):
    tok, model, prompts = tiny
    nll, count = sequence_nll(model, prompts, batch_size=12)
    stats = next_token_stats(model, prompts, batch_size=12, with_rank=True)
    batching.reset()
    _out_of_memory_above(model.base_model, monkeypatch, 5)  # scoring runs the base model, then the head in chunks
    got_nll, got_count = sequence_nll(model, prompts, batch_size=12)
    assert np.array_equal(got_nll, nll) and np.array_equal(got_count, count)
    assert next_token_stats(model, prompts, batch_size=12, with_rank=True) == stats
    assert batching.used() == {"score": {"12": 3}}


def test_other_errors_and_a_batch_of_one_are_not_retried(tiny, fresh, monkeypatch):
    tok, model, prompts = tiny
    _out_of_memory_above(model.base_model, monkeypatch, 0)
    with pytest.raises(torch.OutOfMemoryError):
        sequence_nll(model, prompts, batch_size=4)
    calls = []

    def broken(a, b):
        calls.append((a, b))
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        batching.run_fitting("x", 4, 0, 8, broken)
    assert calls == [(0, 4)]
