"""Batched, seeded generation of synthetic examples (prompted or unconditional) with the KV cache."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from testbed.config import GenerationConfig


def decoding_kwargs(g: GenerationConfig) -> dict:
    """`generate` keyword arguments for the configured decoding: greedy, beam search or sampling."""
    kwargs = dict(do_sample=g.do_sample, num_beams=g.num_beams, repetition_penalty=g.repetition_penalty)
    if g.do_sample:
        kwargs.update(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, min_p=g.min_p or None)
    else:  # the model's own generation_config may carry sampling defaults; switch them off
        kwargs.update(temperature=None, top_k=None, top_p=None)
    return kwargs


def prompt_matrix(blocks: np.ndarray, n: int, prompt_tokens: int) -> np.ndarray:
    """The first `prompt_tokens` of blocks 0..n-1 (cycling through the blocks if n exceeds them)."""
    return blocks[np.arange(n) % len(blocks), :prompt_tokens]


def continuation_lengths(ids: np.ndarray, eos: int) -> np.ndarray:
    """Length of each continuation up to and including its first eos (the rest is padding)."""
    is_eos = ids == eos
    return np.where(is_eos.any(axis=1), is_eos.argmax(axis=1) + 1, ids.shape[1])


@torch.inference_mode()
def generate(model, prompts: np.ndarray, g: GenerationConfig, max_new_tokens: int, batch_size: int,
             seed: int, eos: int, desc: str = "generate") -> tuple[np.ndarray, np.ndarray]:
    """Continue every prompt row; return (ids (n, max_new_tokens) padded with eos, lengths).

    `prompts` is (n, k) token ids; unconditional generation passes a column of the start token.
    The seed fixes every draw, so the same model, prompts and seed give the same continuations.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    n = len(prompts)
    out = np.full((n, max_new_tokens), eos, dtype=np.int64)
    kwargs = decoding_kwargs(g)
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        batch = torch.as_tensor(prompts[start : start + batch_size], device=device)
        result = model.generate(
            input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=max_new_tokens,
            pad_token_id=eos, eos_token_id=eos, use_cache=True, **kwargs,
        )
        new = result[:, batch.shape[1] :].cpu().numpy()
        out[start : start + len(new), : new.shape[1]] = new
    model.train(was_training)
    return out, continuation_lengths(out, eos)
