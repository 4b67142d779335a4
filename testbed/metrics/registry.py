"""Every metric a run records, once: its title, unit, which way is better, how it is printed and plotted,
the values it can take, and where it is shown. The terminal table, report.md, the plots and the
early-warning table all read this list; a new metric is one entry (in the order it should appear).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Where a metric is shown.
TERMINAL = "terminal"  # a column of the table printed after a run
REPORT = "report"  # a table of report.md (generation x setting) and a panel of metrics-<group>.png
SUMMARY = "summary"  # a column of report.md's summary (first -> last generation)
SIGNAL = "signal"  # a row of the early-warning table (which signal moves first)
CURATION = "curation"  # a column of the curation table (what each defence kept and dropped)
HEADLINE = "headline"  # headline.png: the four metrics a reader looks at first (task, diversity, repetition, tail)
PROGRESS = "progress"  # the line printed as each generation ends
RECOVERY = "recovery"  # a column of the recovery table (how much of the damage healing undid)
RECOVERY_PLOT = "recovery_plot"  # a row of panels of recovery.png
OUT_OF_DOMAIN = "out_of_domain"  # a row of the out-of-domain table (an eval.corpora metric against the control)
VIEWS = (TERMINAL, REPORT, SUMMARY, SIGNAL, CURATION, HEADLINE, PROGRESS, RECOVERY, RECOVERY_PLOT, OUT_OF_DOMAIN)

# A metric's role in the phase rule (testbed/metrics/phases.py); its direction of damage is against higher_is_better.
HEAD, TAIL, VARIANCE = "head", "tail", "variance"


@dataclass(frozen=True)
class Metric:
    key: str  # the key in metrics.jsonl
    title: str
    unit: str
    higher_is_better: bool | None  # None: neither way is better
    views: tuple[str, ...]
    fmt: str = "{:.3f}"  # a cell of the terminal table
    header: str = ""  # the terminal table's column header (default: the key)
    log: bool = False  # plotted on a log axis (perplexities)
    low: float | None = None  # the smallest value the metric can take (None: unbounded)
    high: float | None = None  # the largest
    role: str | None = None  # HEAD, TAIL or VARIANCE: a signal of the phase rule (None: not one)
    group: str = "other"  # a REPORT metric's figure, metrics-<group>.png (GROUPS: its title)

    def clip(self, values):
        """`values` (a number or numpy array) clipped to what the metric can take: bands stay inside it."""
        import numpy as np

        return np.clip(values, -np.inf if self.low is None else self.low, np.inf if self.high is None else self.high)


def _m(key, title, unit, better, views, fmt="{:.3f}", header="", log=False, low=None, high=None, role=None,
       group="other") -> Metric:
    assert role is None or better is not None, f"{key}: a phase signal needs a direction (higher_is_better)"
    return Metric(key, title, unit, better, tuple(views), fmt, header, log, low, high, role, group)


_T, _R, _S, _W, _C, _H, _P = TERMINAL, REPORT, SUMMARY, SIGNAL, CURATION, HEADLINE, PROGRESS
_RC, _RP, _O = RECOVERY, RECOVERY_PLOT, OUT_OF_DOMAIN
# The report's figures of every metric, one per group, each readable at page width.
_FIT, _DIV, _TAILS, _QUAL, _INT = "fit", "diversity", "tails", "quality", "internals"
GROUPS = {_FIT: "How well the model fits human text and the language", _DIV: "Diversity of the samples",
          _TAILS: "The tails: rare words the samples keep", _QUAL: "Quality of the samples",
          _INT: "The model's confidence and representations", "other": "Other metrics"}
SHARE = {"low": 0.0, "high": 1.0}
PPL = {"log": True, "low": 1.0}

METRICS: list[Metric] = [
    _m("phase", "Phase of collapse (testbed/metrics/phases.py)", "none | early | late", None, (_T,), "{}"),
    _m("ppl_human", "Perplexity on human test text", "perplexity", False, (_T, _R, _S, _W, _H, _P, _RC, _RP), "{:.2f}",
       **PPL, group=_FIT),
    _m("ppl_human_head", "Perplexity on human text, frequent targets", "perplexity", False, (_T, _R, _W, _RC),
       "{:.2f}", "ppl_head", role=HEAD, **PPL, group=_FIT),
    _m("ppl_human_tail", "Perplexity on human text, rare targets", "perplexity", False, (_T, _R, _W, _RC, _RP),
       "{:.3g}", "ppl_tail", role=TAIL, **PPL, group=_FIT),
    _m("distinct_1", "Distinct-1 of samples", "unique / total unigrams", True, (_T, _R), header="dist-1", **SHARE,
       group=_DIV),
    _m("distinct_2", "Distinct-2 of samples", "unique / total bigrams", True, (_T, _R, _S, _W, _H, _RC),
       header="dist-2", role=VARIANCE, **SHARE, group=_DIV),
    _m("distinct_4", "Distinct-4 of samples", "unique / total 4-grams", True, (_T, _R, _P), header="dist-4", **SHARE,
       group=_DIV),
    _m("self_bleu", "Self-BLEU-4 of samples", "BLEU", False, (_T, _R, _S, _W, _H, _P), header="self-BLEU", **SHARE,
       group=_DIV),
    _m("rep_4", "Repetition rate rep-4", "share of repeated 4-grams", False, (_T, _R), header="rep-4", **SHARE,
       group=_DIV),
    _m("entropy", "Unigram entropy of samples", "bits", True, (_T, _R, _S, _W, _RC), "{:.2f}", low=0.0,
       role=VARIANCE, group=_DIV),
    _m("tail_coverage", "Tail coverage", "share of rare human words produced", True, (_T, _R, _S, _W, _H, _RC, _RP),
       header="tail_cov", role=TAIL, **SHARE, group=_TAILS),
    _m("synthetic_ppl_gen0_mean", "Synthetic data under generation 0 (mean)", "perplexity", None, (_T, _R, _S),
       "{:.1f}", "syn_ppl@g0", **PPL, group=_QUAL),
    _m("synthetic_ppl_gen0_p95", "Synthetic data under generation 0 (95th percentile)", "perplexity", None, (_T, _R),
       "{:.1f}", "p95", **PPL, group=_QUAL),
    _m("kl_per_word", "KL(language || model), estimated", "nats / word", False, (_T, _R, _S, _W, _RC), "{:.2f}",
       "KL/word", low=0.0, group=_FIT),
    _m("excess_nll_frequent_words", "Model NLL - exact NLL of frequent words (held-out sentences)", "nats / word",
       False, (_R,), group=_FIT),
    _m("excess_nll_rare_words", "Model NLL - exact NLL of rare words (held-out sentences)", "nats / word", False,
       (_R,), group=_FIT),
    _m("true_nll_per_word", "True NLL of samples under the language", "nats / word", None, (_R,), low=0.0,
       group=_QUAL),
    _m("grammatical_rate", "Grammatical sentences in samples", "share", True, (_R, _W, _RC, _RP), role=HEAD,
       **SHARE, group=_QUAL),
    _m("tail_mass_lost", "True probability mass of words no longer produced", "probability", False,
       (_T, _R, _S, _RC), header="tail_lost", role=TAIL, **SHARE, group=_TAILS),
    _m("ppl_self", "Perplexity of the model on its own samples", "perplexity", None, (_R,), **PPL, group=_INT),
    _m("ppl_gap", "Gap: log ppl_human - log ppl_self", "nats", False, (_R, _W), group=_INT),
    _m("token_entropy", "Next-token entropy on human text", "nats", None, (_R, _W), low=0.0, group=_INT),
    _m("confident_share", "Confident positions (top p >= 0.99) on human text", "share", None, (_R, _W), **SHARE,
       group=_INT),
    _m("tail_token_mass", "Sampled tokens outside the human head", "share", True, (_R, _W, _RC), role=TAIL, **SHARE,
       group=_TAILS),
    _m("unigram_kl", "Unigram KL(human || samples), smoothed", "nats", False, (_R, _W), low=0.0, group=_TAILS),
    _m("loglik_std_gen0", "Spread of sample log-likelihood under generation 0", "std, nats / token", True,
       (_R, _W, _RC), low=0.0, role=VARIANCE, group=_INT),
    _m("loglik_std_self", "Spread of sample log-likelihood under the model", "std, nats / token", True, (_R,),
       low=0.0, group=_INT),
    _m("effective_rank", "Effective rank of representations of human text", "rank", True, (_R, _W), low=1.0,
       group=_INT),
    _m("embedding_diversity", "Sample embedding diversity under generation 0", "mean cosine distance", True, (_R, _W),
       low=0.0, high=2.0, group=_DIV),
    # Curation (generations >= 1): examples per generation, and the detector's rates.
    _m("synthetic_kept", "Synthetic examples kept", "examples", None, (_C,), header="synthetic kept", low=0.0),
    _m("synthetic_dropped_dedup", "Synthetic examples dropped by deduplication", "examples", None, (_C,),
       header="dropped: dedup", low=0.0),
    _m("synthetic_dropped_verifier", "Synthetic examples dropped by the verifier", "examples", None, (_C,),
       header="dropped: verifier", low=0.0),
    _m("synthetic_dropped_perplexity", "Synthetic examples dropped by the perplexity filter", "examples", None, (_C,),
       header="dropped: ppl", low=0.0),
    _m("pool_human_in", "Human examples in the pool", "examples", None, (_C,), header="pool human", low=0.0),
    _m("pool_human_kept", "Human examples kept after screening", "examples", None, (_C,), header="human kept",
       low=0.0),
    _m("pool_synthetic_in", "Synthetic examples in the pool", "examples", None, (_C,), header="pool synthetic",
       low=0.0),
    _m("pool_synthetic_kept", "Synthetic examples kept after screening", "examples", None, (_C,),
       header="synthetic kept after screening", low=0.0),
    _m("detector_tpr", "Synthetic examples the detector flagged", "share", True, (_C,), header="detector TPR",
       **SHARE),
    _m("detector_fpr", "Human examples the detector flagged", "share", False, (_C,), header="detector FPR", **SHARE),
    _m("z_synthetic_mean", "Watermark z-score of synthetic text", "z", None, (_C,), header="z synthetic"),
    _m("z_human_mean", "Watermark z-score of human text", "z", None, (_C,), header="z human"),
]

BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
assert len(BY_KEY) == len(METRICS), "a metric key is registered twice"


def corpus_metrics(name: str) -> list[Metric]:
    """The metrics of the eval.corpora entry `name` (evaluation.corpus_metrics); generation 0's row also holds
    each with the suffix _zero_shot (the base model's value)."""
    title, group = f"Perplexity on {name} (eval.corpora)", f"{_FIT}-{name}"
    return [
        _m(f"ppl_{name}", title, "perplexity", False, (_T, _R, _S, _O, _RP), "{:.2f}", **PPL, group=group),
        _m(f"ppl_{name}_head", f"{title}, frequent targets", "perplexity", False, (_R, _O), "{:.2f}", **PPL,
           group=group),
        _m(f"ppl_{name}_tail", f"{title}, rare targets", "perplexity", False, (_R, _O, _RP), "{:.3g}", **PPL,
           group=group),
        _m(f"kl_per_word_{name}", f"KL({name} || model), estimated", "nats / word", False, (_R, _S, _O), "{:.2f}",
           low=0.0, group=group),
    ]


def group_title(group: str) -> str:
    """The title of a group's figure; an eval.corpora entry's group (fit-<name>) is titled by its name."""
    return GROUPS.get(group) or f"How well the model fits {group.removeprefix(_FIT + '-')} (eval.corpora)"


def shown_in(view: str, corpora: Iterable[str] = ()) -> list[Metric]:
    """The metrics shown in `view` (one of VIEWS), in registry order, then those of each eval.corpora entry."""
    return [m for m in METRICS + [m for name in corpora for m in corpus_metrics(name)] if view in m.views]


def with_role(role: str) -> list[Metric]:
    """The phase rule's signals of one role (HEAD, TAIL or VARIANCE), in registry order."""
    return [m for m in METRICS if m.role == role]
