"""Early signals of collapse: next-token concentration, the perplexity gap, tail-token mass,
unigram KL, the spread of sample log-likelihood and the geometry of sequence embeddings.

Pure functions over token ids, per-sequence NLLs and embedding matrices, plus a few batched model passes
that feed them. Token ids follow `sequence_nll`: an (n, L) int array where -1, or a position at or beyond
`lengths`, is padding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from testbed.metrics.perplexity import (
    CHUNK_ELEMENTS,
    each_batch,
    final_hidden,
    logit_chunks,
    sequence_nll,
    token_nll,
    valid_mask,
)
from testbed.model import evaluating


def valid_tokens(ids: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """The tokens of padded rows (see valid_mask), flattened in row order: generate's (ids, lengths) as a 1-D array."""
    return np.asarray(ids)[valid_mask(ids, lengths)]


def position_stats(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module | None = None,
                   chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 NLL of `targets` (batch, t), predictive entropy (nats) and top probability, at positions [:, :t]
    of `hidden` (see `logit_chunks`; with `head` None, `hidden` are logits).

    Chunked like `token_nll`: about `chunk_elements` logits are in fp32 at a time (with their log-softmax,
    probabilities and entropy terms, four blocks that size), never a whole (batch, t, vocabulary) tensor.
    """
    nll, entropy, top = (torch.empty(targets.shape, dtype=torch.float32, device=hidden.device) for _ in range(3))
    for where, logits in logit_chunks(hidden, targets.shape[1], head, chunk_elements):
        logp = logits.log_softmax(-1)
        nll[where] = -logp.gather(-1, targets[where].unsqueeze(-1)).squeeze(-1)
        top[where] = logp.amax(-1).exp()
        # entr(p) = -p log p, and 0 where p = 0 (a -inf logit), where p * log p would give NaN.
        entropy[where] = torch.special.entr(logp.exp()).sum(-1)
    return nll, entropy, top


@torch.inference_mode()
def next_token_stats(model, blocks: np.ndarray, batch_size: int = 64, confident: float = 0.99,
                     with_rank: bool = False, groups: dict[str, np.ndarray] | None = None) -> dict:
    """How concentrated the model's next-token predictions are on `blocks` (human text), in one pass.

    Over the positions `sequence_nll` scores (each one with a valid next token):
    `token_entropy`: mean predictive entropy (nats); `confident_share`: share of positions whose top
    probability is >= `confident`; `perplexity`: exp(mean NLL), equal to `perplexity(model, blocks)`.
    A collapsing model grows sure of itself: entropy falls and the confident share rises.
    With `with_rank`, also `effective_rank` (equal to `effective_rank(model, blocks)`) from the same forward
    pass, which is most of the cost of either.
    `groups` (name -> bool mask over token ids, e.g. `frequent_tokens`) splits the perplexity by target token:
    `perplexity_<name>` is exp(mean NLL) over the positions whose target is in the group (NaN if none), from
    the same pass; `block_nll` and `block_count` (name -> (blocks,) arrays, "all" for every target) hold
    each block's NLL sum and target count, for a bootstrap over blocks.
    """
    blocks = np.asarray(blocks)
    valid = valid_mask(blocks)
    groups = groups or {}
    pooled: list[torch.Tensor] = []
    with evaluating(model) as device:
        masks = [torch.as_tensor(np.asarray(m, dtype=bool), device=device) for m in groups.values()]
        # Per block: NLL, entropy, confident, then the NLL of each group; target counts: all, then each group.
        sums = torch.zeros(3 + len(masks), len(blocks), dtype=torch.float32, device=device)
        count = torch.zeros(1 + len(masks), len(blocks), dtype=torch.int64, device=device)

        def stats(rows: slice, x: torch.Tensor, mask: torch.Tensor) -> None:
            hidden, head = final_hidden(model, x, mask)
            if with_rank:
                pooled.append(_mean_pool(hidden, mask).cpu())
            target_mask = mask[:, 1:] & mask[:, :-1]
            nll, entropy, top = position_stats(hidden, x[:, 1:], head, CHUNK_ELEMENTS)
            in_group = [target_mask & m[x[:, 1:]] for m in masks]
            for k, value in enumerate((nll, entropy, top >= confident, *(nll * g for g in in_group))):
                sums[k, rows] = (value * target_mask).sum(dim=1)
            for k, g in enumerate((target_mask, *in_group)):
                count[k, rows] = g.sum(dim=1)

        each_batch(blocks, valid, batch_size, device, stats)
    # Row sums are fp32 on the device (one transfer); the sum over rows is taken in float64.
    sums, count = sums.cpu().double().numpy(), count.cpu().numpy()
    n = int(count[0].sum())
    nll, entropy, share = sums[:3].sum(axis=1) / n if n else (math.nan,) * 3
    stats = {"token_entropy": float(entropy), "confident_share": float(share), "perplexity": math.exp(nll)}
    if with_rank:
        stats["effective_rank"] = _centred_effective_rank(torch.cat(pooled).numpy()[valid.any(axis=1)])
    if groups:
        names = ["all", *groups]
        block_nll = dict(zip(names, (sums[0], *sums[3:])))
        stats["block_nll"], stats["block_count"] = block_nll, dict(zip(names, count))
        for name in groups:
            stats[f"perplexity_{name}"] = pooled_perplexity(block_nll[name], stats["block_count"][name])
    return stats


@torch.inference_mode()
def position_nll(model, ids: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
    """(n, L) float64: the NLL of each token of `ids` given the tokens before it in its row (the positions
    `sequence_nll` scores, whose row sums it gives); NaN at column 0 and where the token or its context is
    padding. For per-token attributions of a perplexity pass (e.g. to words)."""
    ids = np.asarray(ids)
    valid = valid_mask(ids, lengths)
    out = np.full(ids.shape, np.nan)
    with evaluating(model) as device:

        def score(rows: slice, x: torch.Tensor, mask: torch.Tensor) -> None:
            hidden, head = final_hidden(model, x, mask)
            token = token_nll(hidden, x[:, 1:], head, CHUNK_ELEMENTS)
            scored = mask[:, 1:] & mask[:, :-1]
            out[rows, 1:] = torch.where(scored, token, torch.nan).cpu().double().numpy()

        each_batch(ids, valid, batch_size, device, score)
    return out


def pooled_perplexity(nll: np.ndarray, count: np.ndarray) -> float:
    """exp(sum of NLL / sum of predicted tokens): the token-weighted perplexity of blocks; NaN for no token."""
    total = int(np.sum(count))
    return math.exp(float(np.sum(nll)) / total) if total else math.nan


def sample_perplexity(model, ids: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 64) -> float:
    """Token-weighted perplexity of sequences, exp(total NLL / predicted tokens): `ppl_self` when they are the
    model's own samples. Weighted like `perplexity` over human blocks, so the two are comparable."""
    nll, count = sequence_nll(model, ids, lengths, batch_size)
    return math.exp(nll.sum() / count.sum()) if count.sum() else math.nan


def ppl_gap(ppl_human: float, ppl_self: float) -> float:
    """log(ppl_human) - log(ppl_self): how much better the model predicts its own samples than human text.

    Grows over generations as the model fits its own output and loses human text; on a log scale so that
    equal factors count the same at any perplexity.
    """
    return math.log(ppl_human) - math.log(ppl_self)


def loglik_std(nll: np.ndarray, count: np.ndarray) -> float:
    """Std (ddof 0) over sequences of the mean per-token log-likelihood, -nll / count (`sequence_nll`'s output).

    Per token rather than per sequence, so that differences in sample length do not count as spread.
    Under a fixed model (generation 0) a shrinking value means the samples grow alike. Sequences with no
    predicted token are skipped; NaN if none is left.
    """
    nll, count = np.asarray(nll, dtype=np.float64), np.asarray(count)
    has = count > 0
    return float(np.std(-nll[has] / count[has])) if has.any() else math.nan


def frequent_tokens(human_train_ids: np.ndarray, q: int, size: int) -> np.ndarray:
    """(size,) bool: the `q` most frequent token ids of the human training text.

    Ranked by count, ties broken toward the smaller id; ids the human text never holds are never frequent
    (so there are min(q, distinct human ids) of them). Negative ids are padding and ignored.
    """
    counts = _counts(human_train_ids, size)
    top = np.argsort(-counts, kind="stable")[:q]  # stable: equal counts keep id order
    out = np.zeros(len(counts), dtype=bool)
    out[top[counts[top] > 0]] = True
    return out[:size]


def head_tokens(human_train_ids: np.ndarray, size: int, share: float = 0.5) -> np.ndarray:
    """(size,) bool: the most frequent token ids of the human training text that together make up `share` of
    its tokens: the fewest ids, taken by descending count (ties toward the smaller id), whose counts reach it."""
    counts = _counts(human_train_ids, size)
    order = np.argsort(-counts, kind="stable")
    reached = np.cumsum(counts[order]) >= share * counts.sum()
    out = np.zeros(len(counts), dtype=bool)
    out[order[: int(np.argmax(reached)) + 1]] = counts.sum() > 0
    return out[:size]


def _counts(ids: np.ndarray, size: int) -> np.ndarray:
    ids = np.asarray(ids).ravel()
    ids = ids[ids >= 0]
    return np.bincount(ids, minlength=size)


def tail_token_mass(sample_ids: np.ndarray, human_train_ids: np.ndarray, q: int) -> float:
    """Share of sampled tokens outside the head of the human training text: its `q` most frequent token ids
    (see frequent_tokens). Negative ids are padding and ignored in both arrays (see valid_tokens for
    generate's eos-padded output). NaN if no sampled token.
    """
    samples = np.asarray(sample_ids).ravel()
    samples = samples[samples >= 0]
    if not len(samples):
        return math.nan
    return 1.0 - float(frequent_tokens(human_train_ids, q, samples.max() + 1)[samples].mean())


def unigram_kl(human_ids: np.ndarray, sample_ids: np.ndarray, vocab_size: int, alpha: float) -> float:
    """KL(human || samples) in nats between the unigram distributions of two sets of token ids.

    Both distributions are add-alpha smoothed over all `vocab_size` ids, p(v) = (count(v) + alpha) /
    (total + alpha * vocab_size), so the KL is finite when the samples miss a human token. A missed token
    adds p_human(v) * log(p_human(v) * (total_samples + alpha * vocab_size) / alpha): the value depends
    on alpha and on the number of sampled tokens, so compare generations only with both held fixed.
    Negative ids are padding and ignored.
    """
    if alpha <= 0:
        raise ValueError(f"unigram_kl: alpha must be > 0, got {alpha}")
    p, q = (_smoothed_unigram(ids, vocab_size, alpha) for ids in (human_ids, sample_ids))
    return float((p * (np.log(p) - np.log(q))).sum())


def _smoothed_unigram(ids: np.ndarray, vocab_size: int, alpha: float) -> np.ndarray:
    ids = np.asarray(ids).ravel()
    ids = ids[ids >= 0]
    if len(ids) and ids.max() >= vocab_size:
        raise ValueError(f"unigram_kl: token id {ids.max()} is outside the vocabulary of {vocab_size}")
    counts = np.bincount(ids, minlength=vocab_size) + alpha
    return counts / counts.sum()


@torch.inference_mode()
def sequence_embeddings(model, ids: np.ndarray, lengths: np.ndarray | None = None,
                        batch_size: int = 64) -> np.ndarray:
    """(n, width) float32: each row's last hidden state mean-pooled over its valid positions; NaN for empty rows.

    The last hidden state is the base model's output, the same tensor as the last entry of
    `output_hidden_states=True`, but the vocabulary projection is never computed.
    """
    ids = np.asarray(ids)
    valid = valid_mask(ids, lengths)
    with evaluating(model) as device:
        out = []
        each_batch(ids, valid, batch_size, device, lambda _, x, mask: out.append(
            _mean_pool(model.base_model(input_ids=x, attention_mask=mask.long()).last_hidden_state, mask).cpu()))
    width = model.config.hidden_size
    return torch.cat(out).numpy() if out else np.zeros((0, width), dtype=np.float32)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """fp32 mean of `hidden` (batch, length, width) over the positions where `mask` is true; NaN for none."""
    weights = mask.unsqueeze(-1).float()
    return (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1)


def effective_rank_of(matrix: np.ndarray, tol: float | None = None) -> float:
    """Effective rank of `matrix` as given (Roy & Vetterli 2007): exp of the Shannon entropy of p_i = s_i / sum s.

    Between 1 and the rank: k equal singular values give k. Singular values at or below `tol` count as zero
    (by default numpy's rank tolerance, s_max * max(shape) * eps of float64); the zero matrix gives 0.
    """
    m = np.asarray(matrix, dtype=np.float64)
    s = _singular_values(m)
    if tol is None:
        tol = s.max(initial=0.0) * max(m.shape) * np.finfo(np.float64).eps
    s = s[s > tol]
    if not len(s):
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def effective_rank(model, blocks: np.ndarray, batch_size: int = 64) -> float:
    """Effective rank of the centred sequence embeddings (see sequence_embeddings) of `blocks`.

    Centred (the mean embedding subtracted, in float64) so that a direction every sequence shares does not
    count: n sequences give at most min(n - 1, width). Falls as representations collapse onto fewer
    directions. Spread below the float32 resolution of the embeddings is rounding and counts as none, so
    identical embeddings give 0. Empty rows are skipped.
    """
    emb = sequence_embeddings(model, blocks, batch_size=batch_size)
    return _centred_effective_rank(emb[valid_mask(blocks).any(axis=1)])


def _centred_effective_rank(embeddings: np.ndarray) -> float:
    emb = embeddings.astype(np.float64)
    tol = _singular_values(emb).max(initial=0.0) * max(emb.shape) * np.finfo(np.float32).eps
    return effective_rank_of(emb - emb.mean(axis=0), tol)


def _singular_values(m: np.ndarray) -> np.ndarray:
    # torch, not numpy: on a busy 2-core machine numpy's OpenBLAS SVD of a 300 x 128 matrix took ~1.3 s, torch's ~1 ms.
    return torch.linalg.svdvals(torch.as_tensor(m)).numpy()


def mean_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean over pairs i != j of 1 - cos(e_i, e_j); NaN for fewer than two rows.

    From the unit rows u_i: sum_{i != j} cos = ||sum_i u_i||^2 - n, so it costs O(n width), not O(n^2).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    n = len(e)
    if n < 2:
        return math.nan
    total = (e / np.linalg.norm(e, axis=1, keepdims=True)).sum(axis=0)
    return float(1.0 - (total @ total - n) / (n * (n - 1)))


def embedding_diversity(model, ids: np.ndarray, lengths: np.ndarray | None = None, batch_size: int = 64) -> float:
    """Mean pairwise cosine distance of the samples' embeddings (see sequence_embeddings) under `model`.

    Meant for a frozen model (generation 0), so that the value moves only with the samples: falls toward 0
    as they grow alike. Not centred. Empty rows are skipped.
    """
    emb = sequence_embeddings(model, ids, lengths, batch_size)
    return mean_cosine_distance(emb[valid_mask(ids, lengths).any(axis=1)])
