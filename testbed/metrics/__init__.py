"""Collapse metrics: pure functions over samples (text.py) and models (perplexity.py)."""

from testbed.metrics.perplexity import perplexity, sequence_nll, sequence_perplexities
from testbed.metrics.text import distinct_n, entropy, rare_ngrams, rep_n, self_bleu, summarize, tail_coverage

__all__ = ["distinct_n", "entropy", "perplexity", "rare_ngrams", "rep_n", "self_bleu", "sequence_nll",
           "sequence_perplexities", "summarize", "tail_coverage"]
