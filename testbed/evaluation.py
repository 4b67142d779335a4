"""Per-generation evaluation: perplexity on human test text, and diversity/tail metrics of samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed import metrics
from testbed.config import Config
from testbed.generate import generate, prompt_matrix
from testbed.metrics.text import Tail


@dataclass
class EvalSet:
    """What every generation is evaluated on, fixed for the whole run."""

    test_blocks: np.ndarray  # human test split, non-overlapping blocks (last one padded with -1)
    prompts: np.ndarray  # evaluation prompts (n, k); a column of start tokens when unconditional
    human_continuations: np.ndarray  # the human text that follows each prompt, for the baseline
    tail: Tail  # rare words of the human training text


def eval_set(cfg: Config, test_blocks: np.ndarray, train_lines: list[str], bos: int) -> EvalSet:
    e = cfg.eval
    full = test_blocks[(test_blocks >= 0).all(axis=1)]
    if cfg.generation.mode == "prompted":
        prompts = prompt_matrix(full, e.num_samples, e.prompt_tokens)
    else:
        prompts = np.full((e.num_samples, 1), bos, dtype=np.int64)
    rows = np.arange(e.num_samples) % len(full)
    human = full[rows, e.prompt_tokens : e.prompt_tokens + e.max_new_tokens]
    return EvalSet(test_blocks, prompts, human, metrics.rare_ngrams(train_lines, e.tail_rank))


def diversity(texts: list[str], tail: Tail) -> dict[str, float]:
    """distinct-1..4, self-BLEU-4, rep-4, unigram entropy and tail coverage of texts (whitespace words)."""
    row = {f"distinct_{n}": metrics.distinct_n(texts, n) for n in range(1, 5)}
    row["self_bleu"] = metrics.self_bleu(texts, 4)
    row["rep_4"] = metrics.rep_n(texts, 4)
    row["entropy"] = metrics.entropy(texts)
    row["tail_coverage"] = metrics.tail_coverage(texts, tail)
    return row


def decode(tokenizer, ids: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Texts of padded id rows, each cut at its length, without special tokens."""
    rows = [row[:n] for row, n in zip(ids.tolist(), lengths.tolist())]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def sample(model, cfg: Config, es: EvalSet, tokenizer, seed: int) -> tuple[list[str], list[str]]:
    """The evaluation samples of a model: (prompt texts, continuation texts), same prompts and seed always."""
    e = cfg.eval
    ids, lengths = generate(model, es.prompts, cfg.generation, e.max_new_tokens, e.batch_size, seed,
                            tokenizer.eos_token_id, desc="eval samples")
    prompts = tokenizer.batch_decode(es.prompts.tolist(), skip_special_tokens=True)
    return prompts, decode(tokenizer, ids, lengths)


def human_baseline(es: EvalSet, tokenizer) -> dict[str, float]:
    """The diversity metrics of the human continuations of the evaluation prompts."""
    ids = es.human_continuations
    return diversity(decode(tokenizer, ids, np.full(len(ids), ids.shape[1])), es.tail)
