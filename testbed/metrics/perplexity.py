"""Perplexity of a causal LM: corpus-level over blocks, and per sequence. Batched, no gradients."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.inference_mode()
def sequence_nll(model, ids: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 64,
                 desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token NLL (nats) and number of predicted tokens of each row of `ids`.

    Each row is scored on its own (its first token has no context, so a row of length L gives L-1
    predictions). Positions at or beyond `lengths`, or holding -1, are padding and not scored.
    """
    ids = np.asarray(ids)
    valid = ids >= 0
    if lengths is not None:
        valid &= np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll = np.zeros(len(ids))
    count = np.zeros(len(ids), dtype=np.int64)
    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=desc is None):
        mask = torch.as_tensor(valid[start : start + batch_size], device=device)
        x = torch.as_tensor(np.where(valid[start : start + batch_size], ids[start : start + batch_size], 0),
                            device=device)
        logits = model(input_ids=x, attention_mask=mask.long()).logits[:, :-1].float()
        target_mask = mask[:, 1:] & mask[:, :-1]
        token_nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                    reduction="none").view(target_mask.shape)
        nll[start : start + len(x)] = (token_nll * target_mask).sum(dim=1).double().cpu().numpy()
        count[start : start + len(x)] = target_mask.sum(dim=1).cpu().numpy()
    model.train(was_training)
    return nll, count


def perplexity(model, blocks: np.ndarray, batch_size: int = 64, desc: str | None = None) -> float:
    """Token-weighted perplexity over non-overlapping blocks: exp(total NLL / total predicted tokens)."""
    nll, count = sequence_nll(model, blocks, batch_size=batch_size, desc=desc)
    return math.exp(nll.sum() / max(count.sum(), 1))


def sequence_perplexities(model, ids: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 64,
                          desc: str | None = None) -> np.ndarray:
    """exp(mean NLL) of each sequence on its own; NaN for sequences with fewer than two tokens."""
    return per_sequence(*sequence_nll(model, ids, lengths, batch_size, desc))


def per_sequence(nll: np.ndarray, count: np.ndarray) -> np.ndarray:
    """exp(nll / count) per row of sequence_nll's output; NaN where nothing was predicted."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.exp(nll / np.maximum(count, 1)), np.nan)
