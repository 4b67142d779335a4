"""What reaches training: filters on each generation's synthetic set, and a detector that screens the mixed
pool as a scraper would. Every decision is recorded per example, beside its provenance.

Filters (the data producer's curation, before mixing), in this order: deduplication (exact or MinHash-LSH),
verification (the built-in grammar), the perplexity filter under generation 0. Screening (after mixing):
a watermark detector (transformers' WatermarkDetector) or an oracle with set error rates drops what it
flags, human text included; optionally the survivors are resampled by importance (1 - c)^bias.
"""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path

import numpy as np
import torch

from testbed import language, rundir
from testbed.config import Config, CurateConfig, WatermarkConfig
from testbed.distributed import map_rows
from testbed.generate import watermarking_config
from testbed.metrics.perplexity import sequence_perplexities
from testbed.mixing import HUMAN, SYNTHETIC, Examples, accumulates, synthetic_texts
from testbed.model import autocast

KEPT = ""  # `dropped_by` of an example that passed every filter


# ---------------------------------------------------------------------------------------------
# Deduplication.


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed: what 'the same text' means for exact deduplication."""
    return re.sub(r"\s+", " ", text).strip().lower()


class Deduplicator:
    """Drops texts equal (exact: after `normalise`) or near-equal (minhash: estimated Jaccard similarity of
    word shingles above the threshold, via datasketch's MinHash-LSH) to a text seen before, keeping the
    first. Every text that passes joins its index, whatever a later filter decides, so a later call also
    drops duplicates of earlier generations; `rebuilt` restores that index on resume."""

    def __init__(self, cfg: CurateConfig, seed: int = 1):
        self.cfg = cfg
        self.seen: set[str] = set()
        self.lsh = None
        self.count = 0
        if cfg.dedup == "minhash":
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=cfg.minhash_threshold, num_perm=cfg.minhash_perm)
        self.seed = seed

    @classmethod
    def rebuilt(cls, cfg: CurateConfig, saved: list[tuple[list[str], np.ndarray]]) -> Deduplicator:
        """The index an uninterrupted run holds after the generations `saved` (each one's texts and
        `dropped_by`, in order): every text that passed deduplication, kept or dropped by a later filter."""
        dedup = cls(cfg)
        for texts, dropped_by in saved:
            dedup.keep([t for t, by in zip(texts, dropped_by) if by != "dedup"])
        return dedup

    def shingles(self, text: str) -> list[bytes]:
        words = normalise(text).split()
        k = self.cfg.minhash_shingle
        return [" ".join(words[i : i + k]).encode() for i in range(max(len(words) - k + 1, 1))]

    def keep(self, texts: list[str]) -> np.ndarray:
        """A bool mask of the texts to keep; the kept ones join the index."""
        keep = np.ones(len(texts), dtype=bool)
        if self.cfg.dedup == "exact":
            for i, t in enumerate(texts):
                key = normalise(t)
                keep[i] = key not in self.seen
                self.seen.add(key)
        elif self.lsh is not None:
            from datasketch import MinHash

            hashes = MinHash.bulk([self.shingles(t) for t in texts], num_perm=self.cfg.minhash_perm, seed=self.seed)
            for i, h in enumerate(hashes):
                if self.lsh.query(h):
                    keep[i] = False
                else:
                    self.lsh.insert(str(self.count), h)
                    self.count += 1
        return keep


class RunDeduplication:
    """The deduplicator each generation of a run filters with. Deduplication reaches back over earlier
    generations only while their data stays in the pool (the generation's mixing accumulates): then one index of
    every text that passed deduplication so far, rebuilt from the saved synthetic sets when accumulation begins
    (or the run resumes), so a resumed run decides as an uninterrupted one."""

    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        self.index: Deduplicator | None = None  # while the pool accumulates: every text that passed so far

    def of_generation(self, g: int) -> Deduplicator:
        if not accumulates(self.cfg.mixing, g):
            self.index = None
            return Deduplicator(self.cfg.curate)
        if self.index is None:
            self.index = Deduplicator.rebuilt(self.cfg.curate, [synthetic_texts(rundir.gen_dir(self.run_dir, h) /
                                                                                "synthetic") for h in range(1, g)])
        return self.index


# ---------------------------------------------------------------------------------------------
# Verification and the perplexity filter.


def grammatical(texts: list[str], lang: language.Language | language.Mixture, prompted: bool) -> np.ndarray:
    """True for texts whose every complete sentence the built-in grammar can produce (an exact verifier;
    a prompted continuation's leading fragment is not judged)."""
    out = np.ones(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        sents = language.complete_sentences(t, leading_fragment=prompted)
        out[i] = all(np.isfinite(language.sentence_logprob(lang, s)) for s in sents)
    return out


def perplexity_ceiling(baseline: dict) -> float:
    """The perplexity filter's gibberish line: the 99th percentile of the human baseline's per-sequence
    perplexities under generation 0 (none without a baseline)."""
    return float(np.nanpercentile(baseline["ppl_gen0_per_sequence"], 99)) if baseline else np.inf


def perplexity_filter(ppl: np.ndarray, keep_share: float, order: str, ceiling: float) -> np.ndarray:
    """Keep mask: texts above `ceiling` (the human 99th percentile under generation 0) go first as gibberish;
    of the rest, the share `keep_share` of all texts with the highest (or lowest) perplexity stays."""
    ppl = np.asarray(ppl, dtype=float)
    ok = np.isfinite(ppl) & (ppl <= ceiling)
    n_keep = min(int(round(keep_share * len(ppl))), int(ok.sum()))
    candidates = np.flatnonzero(ok)
    ranked = candidates[np.argsort(-ppl[candidates] if order == "highest" else ppl[candidates], kind="stable")]
    keep = np.zeros(len(ppl), dtype=bool)
    keep[ranked[:n_keep]] = True
    return keep


# ---------------------------------------------------------------------------------------------
# Detection.


def watermark_z(model_config, w: WatermarkConfig, ids: np.ndarray, lengths: np.ndarray,
                device: torch.device) -> np.ndarray:
    """z-score of the green-token count of each row (prompt stripped: the rows are continuations or human
    blocks), with transformers' WatermarkDetector (repeated n-grams counted once; on the device type that
    generated, whose random generator draws the green lists). NaN for rows too short to score."""
    from transformers import WatermarkDetector

    detector = WatermarkDetector(model_config=model_config, device=device.type,
                                 watermarking_config=watermarking_config(w), ignore_repeated_ngrams=True)
    z = np.full(len(ids), math.nan)
    rows = torch.as_tensor(ids, device=device)
    bos = model_config.bos_token_id
    for i, n in enumerate(np.asarray(lengths).tolist()):  # rows differ in length and in a leading BOS
        row = rows[i : i + 1, :n]
        if n - int(row[0, 0] == bos) - w.context_width >= 1:
            z[i] = float(detector(row, return_dict=True).z_score[0])
    return z


def oracle_flags(source: np.ndarray, tpr: float, fpr: float, rng: np.random.Generator) -> np.ndarray:
    """An imperfect detector with set rates: each synthetic example is flagged with chance `tpr`, each human
    one with chance `fpr`, independently."""
    u = rng.random(len(source))
    return np.where(source == SYNTHETIC, u < tpr, u < fpr)


def importance_resample(confidence: np.ndarray, cfg: CurateConfig, rng: np.random.Generator) -> np.ndarray:
    """Indices of a resampled pool: round(upsample * n) draws with probability proportional to
    (1 - c)^bias, c the detector's confidence that a text is synthetic, no index more than max_repeats times."""
    n = len(confidence)
    weights = np.clip(1 - np.nan_to_num(confidence, nan=0.5), 0, 1) ** cfg.resample_bias
    if n == 0 or weights.sum() == 0:
        return np.arange(n)
    target = min(int(round(cfg.resample_upsample * n)), n * cfg.resample_max_repeats)
    counts = np.zeros(n, dtype=np.int64)
    while counts.sum() < target:
        open_ = counts < cfg.resample_max_repeats
        p = np.where(open_, weights, 0.0)
        if p.sum() == 0:
            break
        draws = rng.choice(n, size=target - int(counts.sum()), p=p / p.sum())
        counts += np.minimum(np.bincount(draws, minlength=n), cfg.resample_max_repeats - counts)
    return np.repeat(np.arange(n), counts)


# ---------------------------------------------------------------------------------------------
# The stages the loop calls.


def score_under_gen0(gen0, examples: Examples, cfg: Config, accelerator) -> np.ndarray:
    """Per-sequence perplexity of examples under generation 0 (what the perplexity filter reads), each
    process scoring a share, under the run's autocast."""
    score = partial(sequence_perplexities, gen0, batch_size=cfg.eval.batch_size, desc="score under gen 0")
    with autocast(cfg.train.precision, accelerator.device):
        return np.concatenate(map_rows(accelerator, score, examples.ids, examples.lengths))


def detect(examples: Examples, cfg: Config, model_config, device: torch.device, rng: np.random.Generator) -> None:
    """Set the detector's view of each example, once: watermark z-scores (whenever generation is
    watermarked, so detection rates are recorded even without screening) and the detector's flags."""
    c, w = cfg.curate, cfg.generation.watermark
    if w.enabled:
        examples.z = watermark_z(model_config, w, examples.ids, examples.lengths, device)
    if c.detector == "watermark":
        examples.flagged = examples.z > c.z_threshold
    elif c.detector == "oracle":
        examples.flagged = oracle_flags(examples.source, c.detector_tpr, c.detector_fpr, rng)


def filter_synthetic(cfg: Config, texts: list[str], ppl_gen0: np.ndarray, dedup: Deduplicator,
                     lang: language.Language | language.Mixture | None, ppl_ceiling: float) -> np.ndarray:
    """The producer's curation of one synthetic set: per example, the first filter that drops it ("dedup",
    "verifier", "perplexity") or KEPT."""
    c = cfg.curate
    dropped = np.full(len(texts), KEPT, dtype=object)

    def drop(mask: np.ndarray, by: str) -> None:
        dropped[(dropped == KEPT) & mask] = by

    if c.dedup != "none":
        drop(~dedup.keep(texts), "dedup")
    if c.verifier == "grammar":
        drop(~grammatical(texts, lang, cfg.generation.mode == "prompted"), "verifier")
    if c.perplexity_keep < 1:
        still = np.where(dropped == KEPT, ppl_gen0, np.nan)
        drop(~perplexity_filter(still, c.perplexity_keep, c.perplexity_order, ppl_ceiling), "perplexity")
    return dropped.astype(str)


def screen(pool: Examples, cfg: CurateConfig, rng: np.random.Generator) -> Examples:
    """The scraper's filter on a mixed training pool: what the detector flags is dropped, human text
    included; then, optionally, importance resampling by the detector's confidence Φ(z)."""
    kept = pool.take(~pool.flagged)
    if cfg.resample == "importance":
        from scipy.special import ndtr

        kept = kept.take(importance_resample(ndtr(kept.z), cfg, rng))
    return kept


def curation_row(dropped_by: np.ndarray, synth: Examples, human: Examples, pool: Examples, detector: bool) -> dict:
    """What curation did in one generation: synthetic examples in, kept, and dropped by each filter; the
    pool per source before and after screening; the detector's rates measured against provenance; the
    mean watermark z-score of the synthetic set and of the human text."""
    row = {"synthetic_in": len(dropped_by), "synthetic_kept": int((dropped_by == KEPT).sum())}
    for by in ("dedup", "verifier", "perplexity"):
        row[f"synthetic_dropped_{by}"] = int((dropped_by == by).sum())
    for src in (HUMAN, SYNTHETIC):
        mine = pool.source == src
        row[f"pool_{src}_in"] = int(mine.sum())
        row[f"pool_{src}_kept"] = int((mine & ~pool.flagged).sum())
    if detector:
        row["detector_tpr"] = float(pool.flagged[pool.source == SYNTHETIC].mean()) if row["pool_synthetic_in"] \
            else None
        row["detector_fpr"] = float(pool.flagged[pool.source == HUMAN].mean()) if row["pool_human_in"] else None
    row["z_synthetic_mean"] = float(np.nanmean(synth.z)) if np.isfinite(synth.z).any() else None
    row["z_human_mean"] = float(np.nanmean(human.z)) if np.isfinite(human.z).any() else None
    return row
