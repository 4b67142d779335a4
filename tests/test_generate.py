import numpy as np
import pytest
import torch
from transformers import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from testbed.config import GenerationConfig, ModelConfig
from testbed.generate import (
    InverseCDFSampler,
    StepDraws,
    candidates,
    continuation_lengths,
    decoding_kwargs,
    generate,
    synthetic_prompts,
)
from testbed.model import build_model, train_bpe


def _model():
    tok = train_bpe(["a b c d e f g"] * 20, 300)
    return tok, build_model(ModelConfig(layers=1, width=32, heads=2, context=64), tok, seed=0)


def test_prompts_cycle_or_spread_across_the_split():
    from testbed.config import Config
    from testbed.data import spread

    cfg = Config()
    cfg.generation.prompt_tokens = 2
    blocks = np.arange(12).reshape(3, 4)
    cfg.generation.num_samples = 4  # more than the blocks: every block in order, cycling
    assert synthetic_prompts(cfg, blocks, 0, bos=99).tolist() == [[0, 1], [4, 5], [8, 9], [0, 1]]
    cfg.generation.num_samples = None  # one per block, in order (the default)
    assert synthetic_prompts(cfg, blocks, 0, bos=99).tolist() == [[0, 1], [4, 5], [8, 9]]
    cfg.generation.mode = "unconditional"
    assert synthetic_prompts(cfg, blocks, 0, bos=99).tolist() == [[99], [99], [99]]
    picked = spread(1000, 10, seed=3)  # one in each stretch of 100, at one seeded offset
    assert (picked // 100).tolist() == list(range(10)) and len(set(picked % 100)) == 1
    assert not np.array_equal(picked, spread(1000, 10, seed=4))


def test_lengths_stop_at_first_eos():
    assert continuation_lengths(np.array([[5, 0, 0], [5, 6, 7], [0, 0, 0]]), eos=0).tolist() == [2, 3, 1]


def test_seeded_batched_generation_is_reproducible_and_batch_independent_for_greedy():
    tok, model = _model()
    prompts = np.random.default_rng(0).integers(1, len(tok), size=(10, 5))
    g = GenerationConfig(do_sample=True, top_p=0.9)
    a, la = generate(model, prompts, g, 7, 4, seed=3, eos=tok.eos_token_id)
    b, _ = generate(model, prompts, g, 7, 4, seed=3, eos=tok.eos_token_id)
    assert a.shape == (10, 7) and np.array_equal(a, b) and (la <= 7).all()
    greedy = GenerationConfig(do_sample=False)
    x, _ = generate(model, prompts, greedy, 7, 10, seed=0, eos=tok.eos_token_id)
    y, _ = generate(model, prompts, greedy, 7, 3, seed=1, eos=tok.eos_token_id)
    assert np.array_equal(x, y)
    with torch.no_grad():  # greedy continuation of row 0 equals argmax decoding by hand
        ids = torch.as_tensor(prompts[:1])
        for _ in range(2):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert x[0, :2].tolist() == ids[0, 5:].tolist()


def test_beam_search_is_transformers_beam_search_with_the_penalty():
    """generation.num_beams and repetition_penalty reach transformers: the continuations equal its own beam
    search, in any batch size, and differ from greedy decoding."""
    tok, model = _model()
    model.eval()
    eos = tok.eos_token_id
    prompts = np.random.default_rng(0).integers(1, len(tok), size=(4, 5))
    beam = GenerationConfig(do_sample=False, num_beams=3, repetition_penalty=3.0)
    out, lengths = generate(model, prompts, beam, 6, 4, seed=0, eos=eos)
    with torch.no_grad():
        x = torch.as_tensor(prompts)
        ref = model.generate(x, attention_mask=torch.ones_like(x), num_beams=3, do_sample=False, repetition_penalty=3.0,
                             max_new_tokens=6, pad_token_id=eos, eos_token_id=eos)[:, 5:].numpy()
    expected = np.full((4, 6), eos)
    expected[:, : ref.shape[1]] = ref
    assert np.array_equal(out, expected) and np.array_equal(lengths, continuation_lengths(expected, eos))
    assert np.array_equal(generate(model, prompts, beam, 6, 1, seed=0, eos=eos)[0], out)
    greedy, _ = generate(model, prompts, GenerationConfig(do_sample=False, repetition_penalty=3.0), 6, 4, seed=0,
                         eos=eos)
    assert not np.array_equal(out, greedy)


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", [
    (1.0, 0, 0.9, 0.0), (0.7, 0, 0.95, 0.0), (1.0, 10, 1.0, 0.0), (1.3, 20, 0.8, 0.0), (1.0, 0, 1.0, 0.1),
    (0.8, 0, 0.9, 0.05), (1.0, 0, 1.0, 0.0), (1.0, 0, 0.999, 0.0),
])
def test_candidates_equal_transformers_warpers(temperature, top_k, top_p, min_p):
    g = GenerationConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    scores = torch.randn(64, 500, generator=torch.Generator().manual_seed(0)) * 3
    warpers = [make(v) for make, v, on in ((TemperatureLogitsWarper, temperature, temperature != 1.0),
                                           (TopKLogitsWarper, top_k, top_k > 0), (TopPLogitsWarper, top_p, top_p < 1),
                                           (MinPLogitsWarper, min_p, min_p > 0)) if on]
    expected = scores.clone()
    for w in warpers:
        expected = w(None, expected)
    expected = expected.softmax(dim=-1)
    ids, weights = candidates(scores, g)
    got = torch.zeros_like(expected)
    if ids is None:
        got = weights
    else:
        got.scatter_(1, ids, weights)
    got = got / got.sum(dim=-1, keepdim=True)
    assert torch.equal(got > 0, expected > 0)
    assert torch.allclose(got, expected, atol=1e-6)


def test_inverse_cdf_sampler_draws_the_warped_distribution():
    g = GenerationConfig(top_p=0.9)
    logits = torch.randn(1, 20, generator=torch.Generator().manual_seed(1))
    draws = StepDraws(torch.Generator().manual_seed(0), 100000)
    out = InverseCDFSampler(g, draws)(None, logits.repeat(100000, 1))
    assert torch.isfinite(out).sum(dim=1).eq(1).all()  # exactly one token left per row
    freq = torch.bincount(out.argmax(dim=1), minlength=20) / 100000
    expected = TopPLogitsWarper(0.9)(None, logits.clone()).softmax(dim=-1)[0]
    assert (freq[expected == 0] == 0).all()
    assert torch.allclose(freq, expected, atol=0.005)


def test_plain_sampling_draws_its_own_uniforms_beam_sampling_and_watermarks_use_transformers():
    g = GenerationConfig(do_sample=True, top_p=0.9)
    own = decoding_kwargs(g, StepDraws(torch.Generator(), 2))
    assert own["do_sample"] is False and isinstance(own["logits_processor"][0], InverseCDFSampler)
    beams = decoding_kwargs(GenerationConfig(do_sample=True, top_p=0.9, num_beams=2))
    assert beams["do_sample"] is True and beams["top_p"] == 0.9 and "logits_processor" not in beams


def test_step_draws_are_one_generator_drawn_step_by_step_whoever_asks_first():
    """A batch's uniforms are torch.rand(rows, 1) per step from the call's generator, as one sampler over the
    whole batch draws them (the stream every earlier run used), whichever piece of the batch asks first."""
    draws = StepDraws(torch.Generator().manual_seed(3), 4)
    second, first = draws.at(1), draws.at(0)
    reference = torch.Generator().manual_seed(3)
    assert torch.equal(first, torch.rand(4, 1, generator=reference))
    assert torch.equal(second, torch.rand(4, 1, generator=reference))
    assert draws.at(1) is second and len(draws.steps) == 2
