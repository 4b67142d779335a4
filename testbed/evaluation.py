"""Per-generation evaluation: perplexity on human test text, and diversity/tail metrics of samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed import language, metrics
from testbed.config import Config
from testbed.data import TokenizedCorpus, pad_rows, windows
from testbed.generate import generate
from testbed.metrics.text import Tail


@dataclass
class EvalSet:
    """What every generation is evaluated on, fixed for the whole run."""

    test_blocks: np.ndarray  # human test split, non-overlapping blocks (last one padded with -1)
    prompts: np.ndarray  # evaluation prompts (n, k); a column of start tokens when unconditional
    human_continuations: np.ndarray  # the human text that follows each prompt, for the baseline
    tail: Tail  # rare words of the human training text


def eval_set(cfg: Config, tok: TokenizedCorpus, train_lines: list[str], bos: int) -> EvalSet:
    """The evaluation prompts (the starts of test blocks) and the human text that follows each of them."""
    e = cfg.eval
    k = e.prompt_tokens if cfg.generation.mode == "prompted" else 0
    prompts, human = windows(tok.test_stream, cfg.data.block_size, k, e.max_new_tokens, "the human test split")
    rows = np.arange(e.num_samples) % len(prompts)
    prompts = prompts[rows] if k else np.full((e.num_samples, 1), bos, dtype=np.int64)
    return EvalSet(tok.test, prompts, human[rows], metrics.rare_ngrams(train_lines, e.tail_rank))


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


def human_texts(es: EvalSet, tokenizer) -> list[str]:
    """The human continuations of the evaluation prompts: the baseline for the sample metrics."""
    ids = es.human_continuations
    return decode(tokenizer, ids, np.full(len(ids), ids.shape[1]))


@dataclass
class GroundTruth:
    """What the built-in language makes exact: its word distribution, and test sentences with log P."""

    lang: language.Language
    vocab: np.ndarray  # every word of the language
    word_p: np.ndarray  # its exact unigram probability
    sentence_ids: np.ndarray  # (n, L) token ids of test sentences, each after an end-of-text, padded -1
    sentence_logp: np.ndarray  # exact log P of each test sentence
    sentence_words: np.ndarray  # words per test sentence, the '.' included


def ground_truth_set(cfg: Config, test_lines: list[str], tokenizer, max_sentences: int = 1000) -> GroundTruth:
    lang = language.build(cfg.data.language)
    probs = language.word_probabilities(lang)
    sents = [s for line in test_lines for s in language.complete_sentences(line, leading_fragment=False)]
    sents = sents[:max_sentences]
    encoded = tokenizer([" ".join([*s, language.END]) for s in sents], add_special_tokens=False)["input_ids"]
    ids = pad_rows(encoded, offset=1)
    ids[:, 0] = tokenizer.eos_token_id  # a sentence at the start of a line follows an end-of-text
    return GroundTruth(lang, np.array(list(probs)), np.array(list(probs.values())), ids,
                       np.array([language.sentence_logprob(lang, s) for s in sents]),
                       np.array([len(s) + 1 for s in sents]))


def sample_quality(texts: list[str], gt: GroundTruth, prompted: bool) -> dict[str, float]:
    """True NLL per word of the samples' whole sentences under the language, the share of them that are
    grammatical, and the true probability mass of the words the samples no longer produce."""
    sents = [s for t in texts for s in language.complete_sentences(t, leading_fragment=prompted)]
    logp = np.array([language.sentence_logprob(gt.lang, s) for s in sents])
    ok = np.isfinite(logp)
    words = np.array([len(s) + 1 for s in sents])
    produced = np.unique(np.asarray(" ".join(texts).split(), dtype=str))
    return {
        "true_nll_per_word": float(-logp[ok].sum() / words[ok].sum()) if ok.any() else float("nan"),
        "grammatical_rate": float(ok.mean()) if len(ok) else float("nan"),
        "tail_mass_lost": float(gt.word_p[~np.isin(gt.vocab, produced)].sum()),
    }


def kl_per_word(model, gt: GroundTruth, batch_size: int) -> float:
    """Monte-Carlo KL(language || model) per word: mean of log P(s) - log Q(s) over test sentences s, where
    Q(s) is the model's probability of s as the first sentence of a line."""
    nll_q, _ = metrics.sequence_nll(model, gt.sentence_ids, batch_size=batch_size)
    return float((gt.sentence_logp + nll_q).sum() / gt.sentence_words.sum())
