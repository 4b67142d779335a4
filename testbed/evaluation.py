"""Per-generation evaluation: perplexity and next-token concentration on human test text, diversity, tail and
early-warning signals of samples from fixed prompts, and per-sample records (as lm-evaluation-harness
keeps them) beside the aggregates. The human continuations of the same prompts are the baseline."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed import language, rundir, seeding
from testbed.config import Config, GenerationConfig, WatermarkConfig
from testbed.data import (
    HumanCorpus,
    TokenizedCorpus,
    builtin_domain,
    eval_lines,
    pad_rows,
    spread,
    tokenize_text,
    windows,
)
from testbed.generate import decode, generate
from testbed.metrics.perplexity import per_sequence, perplexity, sequence_nll, sequence_perplexities
from testbed.metrics.signals import (
    embedding_diversity,
    frequent_tokens,
    head_tokens,
    loglik_std,
    next_token_stats,
    pooled_perplexity,
    position_nll,
    ppl_gap,
    tail_token_mass,
    unigram_kl,
    valid_mask,
    valid_tokens,
)
from testbed.metrics.text import (
    Tail,
    distinct_n,
    entropy,
    rare_ngrams,
    rep_n,
    rep_n_per_sample,
    self_bleu,
    summarize,
    tail_coverage,
)
from testbed.model import autocast, start_token

HUMAN_BASELINE = "human_baseline.json"  # the run's human baseline (save_human_baseline)


@dataclass
class EvalSet:
    """What every generation is evaluated on, built once per run (eval_set)."""

    test_blocks: np.ndarray  # human test split, non-overlapping blocks (last one padded with -1)
    prompts: np.ndarray  # evaluation prompts (n, k); a column of start tokens when unconditional
    human_continuations: np.ndarray  # the human text that follows each prompt, for the baseline
    reference: np.ndarray  # held-out human text shaped like synthetic data (the human baseline's perplexities)
    tail: Tail  # rare words of the human training text
    human_tokens: np.ndarray  # the human training text's token ids (tail-token mass, unigram KL)
    groups: dict[str, np.ndarray]  # target tokens by their frequency in human_tokens (token_groups)
    vocab_size: int
    gt: GroundTruth | None  # the built-in language's exact probabilities (None on other data)
    corpora: list[ExtraCorpus]  # eval.corpora


@dataclass
class ExtraCorpus:
    """One eval.corpora entry: its test blocks, its head/tail token groups (by frequency in its own test text),
    and on the built-in language its exact probabilities."""

    name: str
    blocks: np.ndarray
    groups: dict[str, np.ndarray]
    gt: GroundTruth | None


def eval_set(cfg: Config, text: HumanCorpus, corpus: TokenizedCorpus, tokenizer, vocab_size: int) -> EvalSet:
    """Everything evaluation reads, built once per run from the human text (`text`) and its blocks (`corpus`):
    the evaluation prompts (starts of test blocks drawn evenly across the split, seeded) and the human text
    that follows each of them; the rare words and token groups of the human training text; the eval.corpora
    entries; on the built-in language its exact probabilities; and held-out human text shaped like synthetic
    data (the human baseline's reference)."""
    e, gen = cfg.eval, cfg.generation
    prompted = gen.mode == "prompted"
    k = e.prompt_tokens if prompted else 0
    prompts, human = windows(corpus.test_stream, cfg.data.block_size, k, e.max_new_tokens, "the human test split")
    rows = spread(len(prompts), e.num_samples, cfg.run.seed)
    prompts = prompts[rows] if k else np.full((e.num_samples, 1), start_token(tokenizer), dtype=np.int64)
    tail, human_tokens = rare_ngrams(text.train, e.tail_rank), corpus.train.ravel()
    corpora = [extra_corpus(name, source, cfg, tokenizer, vocab_size) for name, source in e.corpora.items()]
    gt = ground_truth_set(cfg, text.test, tokenizer) if cfg.data.source == "builtin" else None
    _, reference = windows(corpus.test_stream, cfg.data.block_size, gen.prompt_tokens if prompted else 0,
                           gen.max_new_tokens, "the human test split")
    return EvalSet(corpus.test, prompts, human[rows], reference, tail, human_tokens,
                   token_groups(human_tokens, vocab_size, e.tail_tokens), vocab_size, gt, corpora)


def extra_corpus(name: str, source: str, cfg: Config, tokenizer, vocab_size: int) -> ExtraCorpus:
    """The eval.corpora entry `name`: the test text of `source` (data.eval_lines) in test blocks (at most
    data.max_eval_blocks), with its token groups and, from the built-in language, its exact probabilities."""
    lines = eval_lines(source, cfg.data, cfg.run.seed)
    stream, blocks = tokenize_text(lines, tokenizer, cfg.data, f"eval.corpora.{name} ({source})", keep_partial=True)
    domain = builtin_domain(source)
    gt = ground_truth_set(cfg, lines, tokenizer, domain=domain) if domain is not None else None
    groups = token_groups(stream, vocab_size, cfg.eval.tail_tokens)
    return ExtraCorpus(name, blocks[: cfg.data.max_eval_blocks], groups, gt)


def corpus_metrics(model, cfg: Config, corpora: list[ExtraCorpus], suffix: str = "") -> dict[str, float]:
    """Per eval.corpora entry NAME: ppl_NAME and its head/tail split, and on the built-in language
    kl_per_word_NAME (see word_metrics); `suffix` is appended to each key (_zero_shot: the base model's)."""
    row = {}
    for c in corpora:
        stats = next_token_stats(model, c.blocks, cfg.eval.batch_size, groups=c.groups)
        row.update({f"ppl_{c.name}{suffix}": stats["perplexity"],
                    f"ppl_{c.name}_head{suffix}": stats["perplexity_head"],
                    f"ppl_{c.name}_tail{suffix}": stats["perplexity_tail"]})
        if c.gt is not None:
            row[f"kl_per_word_{c.name}{suffix}"] = word_metrics(model, c.gt, cfg.eval.batch_size)["kl_per_word"]
    return row


def zero_shot(model, cfg: Config, es: EvalSet) -> dict[str, float]:
    """The base model's perplexity on the human test text, and its metrics on each eval.corpora entry (the keys
    with _zero_shot), under the run's autocast."""
    with autocast(cfg.train.precision, next(model.parameters()).device):
        return {"ppl_human_zero_shot": perplexity(model, es.test_blocks, cfg.eval.batch_size, desc="zero-shot ppl"),
                **corpus_metrics(model, cfg, es.corpora, "_zero_shot")}


def diversity(texts: list[str], tail: Tail) -> dict[str, float]:
    """distinct-1..4, self-BLEU-4, rep-4, unigram entropy and tail coverage of texts (whitespace words)."""
    row = {f"distinct_{n}": distinct_n(texts, n) for n in range(1, 5)}
    row["self_bleu"] = self_bleu(texts, 4)
    row["rep_4"] = rep_n(texts, 4)
    row["entropy"] = entropy(texts)
    row["tail_coverage"] = tail_coverage(texts, tail)
    return row


@dataclass
class Samples:
    """Texts with their token ids: a model's evaluation samples, or the human continuations."""

    prompts: list[str]
    texts: list[str]
    ids: np.ndarray  # (n, max_new_tokens), padded beyond `lengths`
    lengths: np.ndarray


def eval_decoding(cfg: Config) -> GenerationConfig:
    """How evaluation samples are drawn: eval.decoding, each unset key as generation's, never watermarked. The
    watermark belongs to the data a model publishes, not to how we measure the model: a watermarked run's
    samples would otherwise carry the watermark's bias, and the same model would score differently in two
    settings."""
    chosen = {k: v for k, v in dataclasses.asdict(cfg.eval.decoding).items() if v is not None}
    return dataclasses.replace(cfg.generation, **chosen, watermark=WatermarkConfig(enabled=False))


def sample(model, cfg: Config, es: EvalSet, tokenizer, seed: int) -> Samples:
    """The evaluation samples of a model: same prompts, seed and decoding in every generation and setting."""
    e = cfg.eval
    ids, lengths = generate(model, es.prompts, eval_decoding(cfg), e.max_new_tokens, e.batch_size, seed,
                            tokenizer.eos_token_id, desc="eval samples")
    prompts = tokenizer.batch_decode(es.prompts.tolist(), skip_special_tokens=True)
    return Samples(prompts, decode(tokenizer, ids, lengths), ids, lengths)


def human_samples(es: EvalSet, tokenizer) -> Samples:
    """The human continuations of the evaluation prompts: the baseline for the sample metrics."""
    ids = es.human_continuations
    lengths = np.full(len(ids), ids.shape[1])
    return Samples(tokenizer.batch_decode(es.prompts.tolist(), skip_special_tokens=True),
                   decode(tokenizer, ids, lengths), ids, lengths)


def evaluate(model, gen0, cfg: Config, es: EvalSet, samples: Samples, noise: bool = False) -> tuple[dict, list[dict]]:
    """A model's metrics row and one record per evaluation sample: `model_metrics` on human test text,
    `sample_metrics` on its samples, and the gap between its perplexity on human text and on its own.
    With `noise` (generation 0), also the `noise_<signal>` keys of the phase signals (see `bootstrap_noise`)."""
    row = model_metrics(model, cfg, es, noise)
    sample_row, records = sample_metrics(samples, gen0, model, cfg, es, noise)
    return {**row, **sample_row, "ppl_gap": ppl_gap(row["ppl_human"], sample_row["ppl_self"])}, records


def evaluate_generation(model, gen0, cfg: Config, es: EvalSet, tokenizer, seed: int,
                        noise: bool = False) -> tuple[dict, list[dict]]:
    """The evaluation stage: a model's metrics row and per-sample records, from the same prompts, seed and
    decoding in every generation, under the run's autocast; with `noise` (generation 0) also the noise band
    of the phases."""
    with autocast(cfg.train.precision, next(model.parameters()).device):
        return evaluate(model, gen0, cfg, es, sample(model, cfg, es, tokenizer, seed), noise)


def human_baseline(gen0, cfg: Config, es: EvalSet, tokenizer) -> tuple[dict, list[dict]]:
    """The floor and reference of every sample metric: the same metrics on the human continuations of the
    evaluation prompts, and the per-sequence perplexities under generation 0 of held-out human text shaped
    like synthetic data (`es.reference`)."""
    with autocast(cfg.train.precision, next(gen0.parameters()).device):
        row, records = sample_metrics(human_samples(es, tokenizer), gen0, None, cfg, es)
        ppl = sequence_perplexities(gen0, es.reference, batch_size=cfg.eval.batch_size)
    return {"generation": "human", **row, **summarize(ppl, "synthetic_ppl_gen0"),
            "ppl_gen0_per_sequence": ppl}, records


def save_human_baseline(run_dir: Path, gen0, cfg: Config, es: EvalSet, tokenizer) -> None:
    """The run's human baseline, computed once (a resume finds it saved): human_samples.jsonl, its records,
    then human_baseline.json, so that the baseline file's presence means both are written."""
    path = run_dir / HUMAN_BASELINE
    if path.is_file():
        return
    baseline, records = human_baseline(gen0, cfg, es, tokenizer)
    rundir.write_jsonl(run_dir / "human_samples.jsonl", [rundir.finite(r) for r in records])
    rundir.write_json(path, rundir.finite(baseline))


def saved_human_baseline(run_dir: Path) -> dict:
    """The run's human baseline as save_human_baseline wrote it ({} when it has none)."""
    path = run_dir / HUMAN_BASELINE
    return json.loads(path.read_text()) if path.is_file() else {}


def token_groups(tokens: np.ndarray, vocab_size: int, tail_tokens: int) -> dict[str, np.ndarray]:
    """Target tokens by their frequency in `tokens` (e.g. the human training text): `head`, the most frequent ids
    that make up half of them; `tail`, every id outside its `tail_tokens` most frequent (never-seen ids
    included)."""
    return {"head": head_tokens(tokens, vocab_size, 0.5),
            "tail": ~frequent_tokens(tokens, tail_tokens, vocab_size)}


def model_metrics(model, cfg: Config, es: EvalSet, noise: bool = False) -> dict:
    """On human test text, in one pass: perplexity, overall and split by how frequent the target token is in
    the human training text (`ppl_human_head`, `ppl_human_tail`, see token_groups), mean next-token entropy,
    the share of confident (p >= 0.99) positions, the effective rank of the representations; on the
    built-in language also the estimated KL(language || model). With `noise`, the bootstrap std over test
    blocks of the head and tail perplexities."""
    stats = next_token_stats(model, es.test_blocks, cfg.eval.batch_size, with_rank=True, groups=es.groups)
    row = {"ppl_human": stats["perplexity"], "ppl_human_head": stats["perplexity_head"],
           "ppl_human_tail": stats["perplexity_tail"], "token_entropy": stats["token_entropy"],
           "confident_share": stats["confident_share"], "effective_rank": stats["effective_rank"]}
    if noise:
        nll, count = stats["block_nll"], stats["block_count"]
        row.update(bootstrap_noise(len(es.test_blocks), {
            f"ppl_human_{g}": lambda b, g=g: pooled_perplexity(nll[g][b], count[g][b])
            for g in ("head", "tail")}, cfg.run.seed))
    if es.gt is not None:
        row.update(word_metrics(model, es.gt, cfg.eval.batch_size))
    return {**row, **corpus_metrics(model, cfg, es.corpora)}


def sample_metrics(samples: Samples, gen0, model, cfg: Config, es: EvalSet,
                   noise: bool = False) -> tuple[dict, list[dict]]:
    """Metrics of a set of samples and a record per sample. With `model` None (human text) the measures
    under the model itself (ppl_self, loglik_std_self) are left out.

    Diversity and tail coverage; perplexity under the model (ppl_self); the spread of per-sample
    log-likelihood under generation 0 and under the model; tail-token mass and unigram KL against the
    human training tokens; embedding diversity under generation 0; on the built-in language, the samples'
    exact quality. Records: prompt, text, length, perplexity under generation 0 and under the model,
    rep-4, and on the built-in language whether every sentence is grammatical and their true log P.
    With `noise`, the bootstrap std over samples of the sample signals of the phase rule (`sample_noise`).
    """
    e, gt = cfg.eval, es.gt
    nll0, count0 = sequence_nll(gen0, samples.ids, samples.lengths, e.batch_size)
    tokens = valid_tokens(samples.ids, samples.lengths)
    row = {**diversity(samples.texts, es.tail), "loglik_std_gen0": loglik_std(nll0, count0),
           "tail_token_mass": tail_token_mass(tokens, es.human_tokens, e.tail_tokens),
           "unigram_kl": unigram_kl(es.human_tokens, tokens, es.vocab_size, e.kl_alpha),
           "embedding_diversity": embedding_diversity(gen0, samples.ids, samples.lengths, e.batch_size)}
    ppl_self = np.full(len(samples.texts), math.nan)
    if model is not None:
        nll, count = sequence_nll(model, samples.ids, samples.lengths, e.batch_size)
        row["ppl_self"] = math.exp(nll.sum() / count.sum()) if count.sum() else math.nan
        row["loglik_std_self"] = loglik_std(nll, count)
        ppl_self = per_sequence(nll, count)
    scores = score_sentences(samples.texts, gt, cfg.generation.mode == "prompted") if gt is not None else None
    if scores is not None:
        row.update(sample_quality(samples.texts, gt, scores))
    if noise:
        row.update(sample_noise(samples, nll0, count0, scores, cfg, es))
    ppl0, rep = per_sequence(nll0, count0), rep_n_per_sample(samples.texts, 4)
    records = []
    for i, (prompt, text) in enumerate(zip(samples.prompts, samples.texts)):
        r = {"index": i, "prompt": prompt, "text": text, "length": int(samples.lengths[i]),
             "ppl_gen0": float(ppl0[i]), "ppl_self": float(ppl_self[i]), "rep_4": float(rep[i])}
        if scores is not None:
            r.update(grammatical=bool(np.isfinite(scores.logp[i]).all()),
                     sentence_logprobs=[float(v) if np.isfinite(v) else None for v in scores.logp[i]])
        records.append(r)
    return row, records


@dataclass
class GroundTruth:
    """What the built-in language makes exact: its word distribution, and test sentences with log P."""

    lang: language.Language | language.Mixture
    vocab: np.ndarray  # every word of the language
    word_p: np.ndarray  # its exact unigram probability
    sentence_ids: np.ndarray  # (n, L) token ids of test sentences, each after an end-of-text, padded -1
    sentence_logp: np.ndarray  # exact log P of each test sentence
    sentence_words: np.ndarray  # words per test sentence, the '.' included
    # The word split of kl_per_word (None for a tokenizer without character offsets):
    word_of_token: np.ndarray | None = None  # (n, L): the word (0-based, '.' last) of each token of sentence_ids, or -1
    word_logp: np.ndarray | None = None  # (n, W): exact log P(word | the words before it), NaN beyond the sentence
    word_group: np.ndarray | None = None  # (n, W): FREQUENT, RARE or 0 by the word's exact unigram probability


FREQUENT, RARE = 1, 2


def word_groups(gt_vocab: np.ndarray, word_p: np.ndarray, tail_rank: int) -> dict[str, int]:
    """word -> FREQUENT (the most probable words that together make up half of the exact unigram mass),
    RARE (ranked at or beyond `tail_rank` by exact probability, as eval.tail_rank ranks the human text's
    words for tail_coverage) or 0 (neither); FREQUENT where both apply. Ties in probability are ranked by the
    word."""
    order = np.lexsort((gt_vocab, -word_p))
    reached = np.cumsum(word_p[order]) >= 0.5 * word_p.sum()
    group = np.zeros(len(order), dtype=np.int64)
    group[order[tail_rank:]] = RARE
    group[order[: int(np.argmax(reached)) + 1]] = FREQUENT
    return dict(zip(gt_vocab.tolist(), group.tolist()))


def ground_truth_set(cfg: Config, test_lines: list[str], tokenizer, max_sentences: int = 1000,
                     domain: language.Domain | None = None) -> GroundTruth:
    """The exact probabilities of `domain` of the built-in language (None: data.language.domain; "all": the
    mixture of all domains) and of the complete sentences of `test_lines` under it."""
    lang = language.build(cfg.data.language, domain)
    probs = language.word_probabilities(lang)
    vocab, word_p = np.array(list(probs)), np.array(list(probs.values()))
    sents = [s for line in test_lines for s in language.complete_sentences(line, leading_fragment=False)]
    sents = sents[:max_sentences]
    texts = [" ".join([*s, language.END]) for s in sents]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast)
    ids = pad_rows(enc["input_ids"], offset=1)
    ids[:, 0] = tokenizer.eos_token_id  # a sentence at the start of a line follows an end-of-text
    gt = GroundTruth(lang, vocab, word_p, ids, np.array([language.sentence_logprob(lang, s) for s in sents]),
                     np.array([len(s) + 1 for s in sents]))
    if tokenizer.is_fast:
        # A token belongs to the word its last character is in (a word's first token carries the space before it).
        gt.word_of_token = pad_rows([[t[:end].count(" ") for _, end in offsets] for t, offsets in
                                     zip(texts, enc["offset_mapping"])], offset=1, width=ids.shape[1])
        groups = word_groups(vocab, word_p, cfg.eval.tail_rank)
        words = [[*s, language.END] for s in sents]
        gt.word_logp = np.full((len(words), max(map(len, words), default=0)), np.nan)
        gt.word_group = pad_rows([[groups.get(x, 0) for x in w] for w in words], fill=0)
        for i, s in enumerate(sents):
            gt.word_logp[i, : len(s) + 1] = language.word_logprobs(lang, s)
    return gt


@dataclass
class SentenceScores:
    """Per text, the exact log P of each of its complete sentences (-inf: not grammatical) and their
    lengths in words, the '.' included."""

    logp: list[np.ndarray]
    words: list[np.ndarray]


def score_sentences(texts: list[str], gt: GroundTruth, prompted: bool) -> SentenceScores:
    """The complete sentences of each text (a prompted continuation's leading fragment left out), scored."""
    sents = [language.complete_sentences(t, leading_fragment=prompted) for t in texts]
    return SentenceScores([np.array([language.sentence_logprob(gt.lang, w) for w in ss]) for ss in sents],
                          [np.array([len(w) + 1 for w in ss]) for ss in sents])


def sample_quality(texts: list[str], gt: GroundTruth, scores: SentenceScores) -> dict[str, float]:
    """True NLL per word of the samples' whole sentences under the language, the share of them that are
    grammatical, and the true probability mass of the words the samples no longer produce."""
    logp, words = np.concatenate([np.zeros(0), *scores.logp]), np.concatenate([np.zeros(0), *scores.words])
    ok = np.isfinite(logp)
    produced = np.unique(np.asarray(" ".join(texts).split(), dtype=str))
    return {
        "true_nll_per_word": float(-logp[ok].sum() / words[ok].sum()) if ok.any() else math.nan,
        "grammatical_rate": float(ok.mean()) if len(ok) else math.nan,
        "tail_mass_lost": float(gt.word_p[~np.isin(gt.vocab, produced)].sum()),
    }


# Resamples of the bootstrap behind the noise band of a single run's phases: the std of a std estimate from
# B resamples is off by about 1 / sqrt(2 (B - 1)), 13% here.
NOISE_RESAMPLES = 32


def bootstrap_noise(n: int, statistics: dict, seed: int, resamples: int = NOISE_RESAMPLES) -> dict[str, float]:
    """`noise_<key>`: the std (ddof 1) of each statistic over bootstrap resamples of its n units (samples or
    test blocks), drawn with replacement; each statistic maps an index array to a value. The same resamples
    for every statistic; NaN values are left out (NaN if fewer than two are left)."""
    rng = seeding.rng(seed, n)  # one stream per set size: samples and test blocks differ
    draws = rng.integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), dtype=np.int64)
    out = {}
    for key, stat in statistics.items():
        values = np.array([stat(b) for b in draws], dtype=float)
        values = values[np.isfinite(values)]
        out[f"noise_{key}"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return out


def sample_noise(samples: Samples, nll0: np.ndarray, count0: np.ndarray, scores: SentenceScores | None,
                 cfg: Config, es: EvalSet) -> dict[str, float]:
    """The bootstrap std over evaluation samples (see bootstrap_noise) of the sample signals of the phase rule:
    tail coverage, tail-token mass, the spread of log-likelihood under generation 0, unigram entropy,
    distinct-2, and on the built-in language the grammatical rate and the tail mass lost."""
    texts = np.array(samples.texts, dtype=object)
    valid = valid_mask(samples.ids, samples.lengths)
    frequent = ~es.groups["tail"]
    tail_tokens = (valid & ~frequent[np.where(valid, samples.ids, 0)]).sum(axis=1)
    tokens = valid.sum(axis=1)
    stats = {
        "tail_coverage": lambda b: tail_coverage(list(texts[b]), es.tail),
        "tail_token_mass": lambda b: tail_tokens[b].sum() / tokens[b].sum() if tokens[b].sum() else math.nan,
        "loglik_std_gen0": lambda b: loglik_std(nll0[b], count0[b]),
        "entropy": lambda b: entropy(list(texts[b])),
        "distinct_2": lambda b: distinct_n(list(texts[b]), 2),
    }
    if scores is not None:
        ok = np.array([np.isfinite(v).sum() for v in scores.logp])
        sentences = np.array([len(v) for v in scores.logp])
        produced = np.array([np.isin(es.gt.vocab, t.split()) for t in samples.texts]).reshape(len(texts), -1)
        stats["grammatical_rate"] = lambda b: ok[b].sum() / sentences[b].sum() if sentences[b].sum() else math.nan
        stats["tail_mass_lost"] = lambda b: float(es.gt.word_p[~produced[b].any(axis=0)].sum())
    return bootstrap_noise(len(texts), stats, cfg.run.seed)


def word_metrics(model, gt: GroundTruth, batch_size: int) -> dict[str, float]:
    """From one pass over the test sentences: `kl_per_word`, a Monte-Carlo KL(language || model) per word,
    the mean of log P(s) - log Q(s) over test sentences s, where Q(s) is the model's probability of s as the
    first sentence of a line; and its split by word, `excess_nll_frequent_words` and `excess_nll_rare_words`:
    the mean of log P(w | prefix) - log Q(w | prefix) over the occurrences of frequent and of rare words
    (see word_groups), where log Q(w | prefix) sums the model's log-probabilities of w's tokens. Summed over
    a sentence's words these give log P(s) - log Q(s) exactly, so `kl_per_word` is their mean over all words."""
    nll = position_nll(model, gt.sentence_ids, batch_size=batch_size)
    scored = np.isfinite(nll)
    row = {"kl_per_word": float((gt.sentence_logp + np.where(scored, nll, 0).sum(axis=1)).sum()
                                / gt.sentence_words.sum())}
    if gt.word_of_token is not None:
        word_nll = np.zeros(gt.word_logp.shape)
        rows, cols = np.nonzero(scored & (gt.word_of_token >= 0))
        np.add.at(word_nll, (rows, gt.word_of_token[rows, cols]), nll[rows, cols])
        excess = word_nll + gt.word_logp
        for name, group in (("frequent", FREQUENT), ("rare", RARE)):
            chosen = gt.word_group == group
            row[f"excess_nll_{name}_words"] = float(excess[chosen].mean()) if chosen.any() else math.nan
    return row
