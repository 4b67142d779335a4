"""Perplexity of a causal LM: corpus-level over blocks, and per sequence. Batched, no gradients."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from testbed.batching import run_fitting
from testbed.model import evaluating

# The LM head is applied to the final hidden states this many logits at a time (64 MB in fp32, plus as much for
# the log-softmax), so scoring never holds a (batch, length, vocabulary) tensor: at 256 x 64 positions and
# OPT's 50,272-token vocabulary that would be 3.3 GB.
CHUNK_ELEMENTS = 2**24


def valid_mask(ids: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """True at the positions of `ids` that hold a token: not -1 and before the row's length."""
    ids = np.asarray(ids)
    valid = ids >= 0
    if lengths is not None:
        valid &= np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return valid


def each_batch(ids: np.ndarray, valid: np.ndarray, batch_size: int, device: torch.device,
               fn: Callable[[slice, torch.Tensor, torch.Tensor], None], desc: str | None = None) -> None:
    """fn(rows, input ids with padding set to 0, bool mask) over batches of rows in order, on `device`. A batch
    that runs out of device memory is redone in smaller pieces (testbed/batching.py): each row is computed
    on its own, so the numbers do not depend on the batch."""

    def piece(a: int, b: int) -> None:
        rows = slice(a, b)
        fn(rows, torch.as_tensor(np.where(valid[rows], ids[rows], 0), device=device),
           torch.as_tensor(valid[rows], device=device))

    for start in tqdm(range(0, len(ids), batch_size), desc=desc, unit="batch", leave=False, disable=desc is None):
        run_fitting("score", batch_size, start, min(start + batch_size, len(ids)), piece)


def final_hidden(model, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.nn.Module]:
    """The model's final hidden states of a batch and its LM head, which maps them to logits.

    The hidden states come from the model's own path to them (`model.base_model`: GPT-2's transformer with
    its final norm, OPT's decoder with its final norm and project_out, Llama's model with its norm), so
    head(hidden) equals the model's logits; the head can then be applied a chunk of positions at a time.
    """
    if hasattr(model, "get_base_model"):  # a peft model (train.lora): the causal LM inside it
        model = model.get_base_model()
    hidden = model.base_model(input_ids=x, attention_mask=mask.long()).last_hidden_state
    return hidden, model.get_output_embeddings()


def logit_chunks(hidden: torch.Tensor, t: int, head: torch.nn.Module | None = None,
                 chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[tuple[tuple[slice, slice], torch.Tensor]]:
    """fp32 logits of positions [:, :t] of `hidden` (batch, >= t, width), a block of rows (or of positions
    within a row, for long rows) at a time: about `chunk_elements` logits each, with where they belong.
    `head` maps hidden states to logits; None: `hidden` are logits already."""
    batch = hidden.shape[0]
    vocab = hidden.shape[-1] if head is None else head.weight.shape[0]
    cols = max(1, min(t, chunk_elements // vocab))
    rows = max(1, chunk_elements // (cols * vocab))
    for r in range(0, batch, rows):
        for c in range(0, t, cols):
            where = (slice(r, r + rows), slice(c, min(c + cols, t)))
            yield where, (hidden[where] if head is None else head(hidden[where])).float()


@torch.inference_mode()
def sequence_nll(model, ids: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 64,
                 desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token NLL (nats) and number of predicted tokens of each row of `ids`.

    Each row is scored on its own (its first token has no context, so a row of length L gives L-1
    predictions). Positions at or beyond `lengths`, or holding -1, are padding and not scored.
    Sums stay on the model's device until the end: one transfer to the host, not one per batch.
    """
    ids = np.asarray(ids)
    valid = valid_mask(ids, lengths)
    with evaluating(model) as device:
        nll = torch.zeros(len(ids), dtype=torch.float32, device=device)
        count = torch.zeros(len(ids), dtype=torch.int64, device=device)

        def score(rows: slice, x: torch.Tensor, mask: torch.Tensor) -> None:
            target_mask = mask[:, 1:] & mask[:, :-1]
            hidden, head = final_hidden(model, x, mask)
            nll[rows] = (token_nll(hidden, x[:, 1:], head, CHUNK_ELEMENTS) * target_mask).sum(dim=1)
            count[rows] = target_mask.sum(dim=1)

        each_batch(ids, valid, batch_size, device, score, desc)
    # An fp32 sum is exact in float64, so converting here equals converting batch by batch.
    return nll.cpu().double().numpy(), count.cpu().numpy()


def token_nll(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module | None = None,
              chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """fp32 NLL of `targets` (batch, t) at positions [:, :t] of `hidden` (see `logit_chunks`; with `head`
    None, `hidden` are logits), position by position.

    Equal to cross_entropy over the whole logits tensor, which is never built: only about `chunk_elements`
    logits exist at a time.
    """
    out = torch.empty(targets.shape, dtype=torch.float32, device=hidden.device)
    for where, logits in logit_chunks(hidden, targets.shape[1], head, chunk_elements):
        target = targets[where]
        out[where] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
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
