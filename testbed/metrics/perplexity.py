"""Perplexity of a causal LM: corpus-level over blocks, and per sequence. Batched, no gradients."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from testbed.batching import run_fitting

# Logits are turned into fp32 log-probabilities this many elements at a time (64 MB, plus as much for the
# log-softmax), so scoring never holds a second full (batch, length, vocabulary) tensor beside the model's.
CHUNK_ELEMENTS = 2**24


@torch.inference_mode()
def sequence_nll(model, ids: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 64,
                 desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token NLL (nats) and number of predicted tokens of each row of `ids`.

    Each row is scored on its own (its first token has no context, so a row of length L gives L-1
    predictions). Positions at or beyond `lengths`, or holding -1, are padding and not scored.
    Sums stay on the model's device until the end: one transfer to the host, not one per batch.
    """
    ids = np.asarray(ids)
    valid = ids >= 0
    if lengths is not None:
        valid &= np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll = torch.zeros(len(ids), dtype=torch.float32, device=device)
    count = torch.zeros(len(ids), dtype=torch.int64, device=device)

    def score(a: int, b: int) -> None:
        rows = slice(a, b)
        mask = torch.as_tensor(valid[rows], device=device)
        x = torch.as_tensor(np.where(valid[rows], ids[rows], 0), device=device)
        target_mask = mask[:, 1:] & mask[:, :-1]
        # Unnamed, the logits are freed here, not held through the next batch's forward pass.
        token = token_nll(model(input_ids=x, attention_mask=mask.long()).logits, x[:, 1:], CHUNK_ELEMENTS)
        nll[rows] = (token * target_mask).sum(dim=1)
        count[rows] = target_mask.sum(dim=1)

    # Rows are scored on their own: a batch that runs out of memory is redone in halves, same numbers.
    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=desc is None):
        run_fitting("score", batch_size, start, min(start + batch_size, len(ids)), score)
    model.train(was_training)
    # An fp32 sum is exact in float64, so converting here equals converting batch by batch.
    return nll.cpu().double().numpy(), count.cpu().numpy()


def token_nll(logits: torch.Tensor, targets: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """fp32 NLL of `targets` (batch, t) under `logits[:, :t]` (batch, >= t, vocabulary), position by position.

    Equal to cross_entropy over the whole tensor, computed a block of rows (or of positions within a
    row, for long rows) at a time, so only about `chunk_elements` logits are ever copied to fp32.
    """
    batch, t = targets.shape
    vocab = logits.shape[-1]
    cols = max(1, min(t, chunk_elements // vocab))
    rows = max(1, chunk_elements // (cols * vocab))
    out = torch.empty(batch, t, dtype=torch.float32, device=logits.device)
    for r in range(0, batch, rows):
        for c in range(0, t, cols):
            chunk = logits[r : r + rows, c : min(c + cols, t)].float()
            target = targets[r : r + rows, c : c + cols]
            out[r : r + rows, c : c + cols] = F.cross_entropy(chunk.reshape(-1, vocab), target.reshape(-1),
                                                              reduction="none").view(target.shape)
    return out


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
