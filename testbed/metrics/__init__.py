"""Collapse metrics: pure functions over samples (text.py) and models (perplexity.py), and the early signals of
collapse (signals.py)."""

from testbed.metrics.perplexity import perplexity, sequence_nll, sequence_perplexities
from testbed.metrics.signals import (
    effective_rank,
    effective_rank_of,
    embedding_diversity,
    frequent_tokens,
    head_tokens,
    loglik_std,
    mean_cosine_distance,
    next_token_stats,
    pooled_perplexity,
    position_nll,
    ppl_gap,
    sample_perplexity,
    sequence_embeddings,
    tail_token_mass,
    unigram_kl,
    valid_mask,
    valid_tokens,
)
from testbed.metrics.text import (
    distinct_n,
    entropy,
    rare_ngrams,
    rep_n,
    rep_n_per_sample,
    self_bleu,
    summarize,
    tail_coverage,
)

__all__ = ["distinct_n", "effective_rank", "effective_rank_of", "embedding_diversity", "entropy", "frequent_tokens",
           "head_tokens", "loglik_std", "mean_cosine_distance", "next_token_stats", "perplexity", "pooled_perplexity",
           "position_nll", "ppl_gap", "rare_ngrams", "rep_n", "rep_n_per_sample", "sample_perplexity", "self_bleu",
           "sequence_embeddings", "sequence_nll", "sequence_perplexities", "summarize", "tail_coverage",
           "tail_token_mass", "unigram_kl", "valid_mask", "valid_tokens"]
