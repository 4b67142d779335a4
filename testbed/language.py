"""The built-in reference language: a seeded probabilistic grammar with exactly known probabilities.

Sentences follow a small grammar over disjoint word classes, so every sentence has one derivation and
its probability is a product of known factors::

    S  -> NP VERB [ NP [ PREP NP ] | ADV ] "."
    NP -> DET [ADJ [ADJ]] NOUN

Within each class words are Zipf-distributed (a long tail of rare words, and frequent words are
short, as in natural languages). The object noun depends on the verb: each verb mixes the global noun
distribution with a Zipf law over its own ranking of the nouns. Because all of this is known, the
testbed can measure exactly what a model loses: the true log-probability of its samples and the
probability mass of the words it no longer produces.

Domains (topics) share the grammar, the words and every probability but the nouns': domain d ranks the
nouns by its own random permutation (domain 0 by the words' order), so the nouns frequent in one domain are
mostly rare in another. A `Mixture` of domains (each sentence from one domain, equally likely) has exact
probabilities too: a sentence's is the mean of its domains'.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from testbed import seeding
from testbed.config import LanguageConfig

# Rule probabilities: NP shapes by number of adjectives, VP shapes.
NP_ADJECTIVES = np.array([0.6, 0.3, 0.1])  # 0, 1 or 2 adjectives
VP_SHAPES = ("V", "VO", "VOP", "VR")  # intransitive, object, object + prepositional phrase, adverb
VP_PROBS = np.array([0.25, 0.5, 0.15, 0.1])
OBJECT_MIX = 0.5  # weight of the verb-specific noun ranking in the object noun distribution
N_DETERMINERS = 6
N_PREPOSITIONS = 8
END = "."

_CONSONANTS = list("bdfgklmnprstvz")
_VOWELS = list("aeiou")


def _zipf(n: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return p / p.sum()


@dataclass(frozen=True)
class Language:
    """Word lists and probabilities of each class; `object_rank[v]` ranks the nouns for verb v."""

    words: dict[str, list[str]]  # class -> words, most probable first
    probs: dict[str, np.ndarray]  # class -> probabilities aligned with words
    object_rank: np.ndarray  # (verbs, nouns): rank of noun n in verb v's own ordering
    lookup: dict[str, tuple[str, int]]  # word -> (class, index)

    def object_probs(self, verb: int) -> np.ndarray:
        """p(object noun | verb): the global law mixed with the verb's own Zipf ranking."""
        own = self.probs["noun"][self.object_rank[verb]]
        return (1 - OBJECT_MIX) * self.probs["noun"] + OBJECT_MIX * own


@dataclass(frozen=True)
class Mixture:
    """The domains' languages, equally likely: a sentence first draws its domain. Words and grammar are
    shared, so `words` and `lookup` are the domains'."""

    domains: tuple[Language, ...]

    @property
    def words(self) -> dict[str, list[str]]:
        return self.domains[0].words

    @property
    def lookup(self) -> dict[str, tuple[str, int]]:
        return self.domains[0].lookup


Domain = int | Literal["all"]  # one domain's index, or "all": their mixture


def build(cfg: LanguageConfig, domain: Domain | None = None) -> Language | Mixture:
    """The language of `domain` (None: cfg.domain), or with "all" the mixture of all cfg.domains domains;
    deterministic in the language's seed and sizes."""
    domain = cfg.domain if domain is None else domain
    base = _build_domain0(cfg)
    if domain == "all":
        return Mixture(tuple(_in_domain(base, cfg, d) for d in range(cfg.domains)))
    if not 0 <= domain < cfg.domains:
        raise ValueError(f"domain {domain} is not in 0..{cfg.domains - 1}")
    return _in_domain(base, cfg, domain)


def _in_domain(lang: Language, cfg: LanguageConfig, domain: int) -> Language:
    """Domain 0 is the language as built; domain d >= 1 gives the nouns' Zipf law its own random ranking."""
    if domain == 0:
        return lang
    rank = seeding.rng(cfg.seed, seeding.TOPIC, domain).permutation(cfg.nouns)
    return replace(lang, probs={**lang.probs, "noun": lang.probs["noun"][rank]})


def _build_domain0(cfg: LanguageConfig) -> Language:
    """Domain 0: the nouns ranked by the words' order; deterministic in the language's seed and sizes."""
    rng = np.random.default_rng(cfg.seed)
    sizes = {"det": N_DETERMINERS, "prep": N_PREPOSITIONS, "noun": cfg.nouns, "verb": cfg.verbs,
             "adj": cfg.adjectives, "adv": cfg.adverbs}
    total = sum(sizes.values())
    pool: set[str] = set()
    while len(pool) < total:
        syllables = int(rng.integers(1, 5))
        pool.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables)))
    # Shuffle, then hand each class its words shortest first: frequent words are short.
    pool_list = sorted(pool)
    rng.shuffle(pool_list)
    words: dict[str, list[str]] = {}
    start = 0
    for cls, n in sizes.items():
        words[cls] = sorted(pool_list[start : start + n], key=len)
        start += n
    probs = {cls: _zipf(n, cfg.zipf_exponent) for cls, n in sizes.items()}
    object_rank = np.argsort(rng.random((cfg.verbs, cfg.nouns)), axis=1)
    lookup = {w: (cls, i) for cls, ws in words.items() for i, w in enumerate(ws)}
    return Language(words=words, probs=probs, object_rank=object_rank, lookup=lookup)


def _noun_phrases(lang: Language, rng: np.random.Generator, n: int, nouns: np.ndarray) -> list[str]:
    n_adj = rng.choice(3, size=n, p=NP_ADJECTIVES)
    det = rng.choice(N_DETERMINERS, size=n, p=lang.probs["det"])
    adj = rng.choice(len(lang.words["adj"]), size=(n, 2), p=lang.probs["adj"])
    W = lang.words
    return [
        " ".join([W["det"][det[i]], *(W["adj"][a] for a in adj[i, : n_adj[i]]), W["noun"][nouns[i]]])
        for i in range(n)
    ]


def sample_sentences(lang: Language | Mixture, n: int, rng: np.random.Generator) -> list[str]:
    """Draw n sentences (each ends with ' .'). Draws are batched per slot, not per word; from a mixture,
    each sentence draws its domain first, then each domain's sentences are drawn together."""
    if isinstance(lang, Mixture):
        which = rng.integers(len(lang.domains), size=n)
        out = np.empty(n, dtype=object)
        for d, dom in enumerate(lang.domains):
            rows = np.nonzero(which == d)[0]
            out[rows] = sample_sentences(dom, len(rows), rng)
        return out.tolist()
    W, P = lang.words, lang.probs
    subj = _noun_phrases(lang, rng, n, rng.choice(len(W["noun"]), size=n, p=P["noun"]))
    verb = rng.choice(len(W["verb"]), size=n, p=P["verb"])
    shape = rng.choice(len(VP_SHAPES), size=n, p=VP_PROBS)
    # Object nouns depend on the verb: inverse-CDF draws against each sentence's own distribution.
    obj_noun = np.empty(n, dtype=np.int64)
    for v in np.unique(verb):
        rows = np.nonzero(verb == v)[0]
        cdf = np.cumsum(lang.object_probs(int(v)))
        draws = np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1], side="right")
        obj_noun[rows] = np.minimum(draws, len(cdf) - 1)
    obj = _noun_phrases(lang, rng, n, obj_noun)
    prep = rng.choice(N_PREPOSITIONS, size=n, p=P["prep"])
    pp = _noun_phrases(lang, rng, n, rng.choice(len(W["noun"]), size=n, p=P["noun"]))
    adv = rng.choice(len(W["adv"]), size=n, p=P["adv"])
    out = []
    for i in range(n):
        s = VP_SHAPES[shape[i]]
        parts = [subj[i], W["verb"][verb[i]]]
        if "O" in s:
            parts.append(obj[i])
        if "P" in s:
            parts += [W["prep"][prep[i]], pp[i]]
        if "R" in s:
            parts.append(W["adv"][adv[i]])
        parts.append(END)
        out.append(" ".join(parts))
    return out


def lines(lang: Language | Mixture, sentences: int, per_line: int, rng: np.random.Generator) -> list[str]:
    """`sentences` sentences drawn, `per_line` to a line."""
    sents = sample_sentences(lang, sentences, rng)
    return [" ".join(sents[i : i + per_line]) for i in range(0, len(sents), per_line)]


def corpus(cfg: LanguageConfig, seed: int, domain: Domain | None = None) -> dict[str, list[str]]:
    """Train/valid/test lines of `domain` (None: cfg.domain; "all": the mixture): each line is
    `sentences_per_line` sentences. `seed` is the run's seed."""
    domain = cfg.domain if domain is None else domain
    lang = build(cfg, domain)
    # The language's seed, then the run's, then (but for domain 0, whose text is the same for any number of
    # domains) the domain's.
    if domain == "all":
        rng = seeding.rng(cfg.seed, seed, seeding.MIXTURE_TEXT)
    elif domain == 0:
        rng = seeding.rng(cfg.seed, seed)
    else:
        rng = seeding.rng(cfg.seed, seed, seeding.DOMAIN_TEXT, domain)
    return {split: lines(lang, n, cfg.sentences_per_line, rng) for split, n in
            (("train", cfg.train_sentences), ("valid", cfg.valid_sentences), ("test", cfg.test_sentences))}


def test_lines(cfg: LanguageConfig, domain: Domain, seed: int) -> list[str]:
    """An extra evaluation corpus (eval.corpora builtin:D or builtin:all): cfg.test_sentences sentences of `domain`
    (or of the mixture of all domains), in a stream of their own for the run's `seed`."""
    rng = seeding.rng(cfg.seed, seeding.CORPUS, seed, cfg.domains if domain == "all" else domain)
    return lines(build(cfg, domain), cfg.test_sentences, cfg.sentences_per_line, rng)


def pretraining_lines(cfg: LanguageConfig, sentences: int, seed: int) -> list[str]:
    """The pretrained base's text (pretrain.source=builtin): `sentences` sentences of the mixture of all domains,
    drawn with pretrain.seed `seed` (the same for every run seed)."""
    rng = seeding.rng(cfg.seed, seeding.PRETRAIN, seed)
    return lines(build(cfg, "all"), sentences, cfg.sentences_per_line, rng)


_SHAPE = re.compile(r"^(DA{0,2}N)V(?:(DA{0,2}N)(?:P(DA{0,2}N))?|R)?$")
_LETTER = {"det": "D", "adj": "A", "noun": "N", "verb": "V", "adv": "R", "prep": "P"}


def _mean_exp(logp: np.ndarray) -> np.ndarray:
    """log of the mean over the first axis (the domains) of exp(logp)."""
    return np.logaddexp.reduce(logp, axis=0) - math.log(len(logp))


def sentence_logprob(lang: Language | Mixture, words: list[str]) -> float:
    """Exact natural-log probability of one sentence (without its final '.'); -inf if ungrammatical (in
    every domain alike)."""
    if isinstance(lang, Mixture):
        return float(_mean_exp(np.array([sentence_logprob(d, words) for d in lang.domains])))
    try:
        tagged = [lang.lookup[w] for w in words]
    except KeyError:
        return -math.inf
    letters = "".join(_LETTER[c] for c, _ in tagged)
    m = _SHAPE.match(letters)
    if m is None:
        return -math.inf
    P = lang.probs
    logp = 0.0
    verb = tagged[m.end(1)][1]
    vp_shape = "V" + ("O" if m.group(2) else "") + ("P" if m.group(3) else "") + ("R" if letters[-1] == "R" else "")
    logp += math.log(VP_PROBS[VP_SHAPES.index(vp_shape)]) + math.log(P["verb"][verb])
    for g, is_object in ((1, False), (2, True), (3, False)):
        if m.group(g) is None:
            continue
        span = tagged[m.start(g) : m.end(g)]
        logp += math.log(NP_ADJECTIVES[len(span) - 2]) + math.log(P["det"][span[0][1]])
        logp += sum(math.log(P["adj"][i]) for _, i in span[1:-1])
        noun = span[-1][1]
        noun_p = lang.object_probs(verb)[noun] if is_object else P["noun"][noun]
        logp += math.log(noun_p)
    if m.group(3) is not None:
        logp += math.log(P["prep"][tagged[m.start(3) - 1][1]])
    if letters.endswith("R"):
        logp += math.log(P["adv"][tagged[-1][1]])
    return logp


def word_logprobs(lang: Language | Mixture, words: list[str]) -> np.ndarray:
    """Exact natural-log probability of each word of a sentence given the words before it, the final '.'
    included (len(words) + 1 values, summing to `sentence_logprob`); all -inf if ungrammatical.

    The grammar's choices are charged where a left-to-right reader learns them: after a determiner an
    adjective comes with probability 0.4 (one or two), after the first adjective a second with 0.25; after the
    verb the sentence ends with 0.25, an object follows with 0.65 (VO, VOP) and an adverb with 0.1; after the
    object noun a prepositional phrase follows with 0.15 / 0.65, else the '.'.

    In a mixture, the domains' posterior given the prefix weighs them: p(w_t | prefix) is the ratio of the
    mixture's probabilities of the prefixes through w_t and through w_(t-1).
    """
    out = np.full(len(words) + 1, -math.inf)
    if not math.isfinite(sentence_logprob(lang, words)):
        return out
    if isinstance(lang, Mixture):
        prefix = _mean_exp(np.cumsum([word_logprobs(d, words) for d in lang.domains], axis=1))
        return np.diff(prefix, prepend=0.0)
    tagged = [lang.lookup[w] for w in words]
    m = _SHAPE.match("".join(_LETTER[c] for c, _ in tagged))
    P = lang.probs
    verb = tagged[m.end(1)][1]
    p_adj = NP_ADJECTIVES[1:].sum()
    out[m.end(1)] = math.log(P["verb"][verb])

    def noun_phrase(group: int, first: float, noun_p: np.ndarray) -> None:
        start, end = m.start(group), m.end(group)
        out[start] = math.log(first) + math.log(P["det"][tagged[start][1]])
        n_adj = end - start - 2
        for k in range(n_adj):  # the first adjective: 0.4; the second, given one: 0.1 / 0.4
            share = p_adj if k == 0 else NP_ADJECTIVES[2] / p_adj
            out[start + 1 + k] = math.log(share) + math.log(P["adj"][tagged[start + 1 + k][1]])
        stop = NP_ADJECTIVES[0] if n_adj == 0 else (NP_ADJECTIVES[1] / p_adj if n_adj == 1 else 1.0)
        out[end - 1] = math.log(stop) + math.log(noun_p[tagged[end - 1][1]])

    noun_phrase(1, 1.0, P["noun"])
    p_object = VP_PROBS[1] + VP_PROBS[2]
    if m.group(2) is None:  # V or VR
        out[-1] = math.log(VP_PROBS[0]) if m.group(0).endswith("V") else 0.0
        if words and tagged[-1][0] == "adv":
            out[-2] = math.log(VP_PROBS[3]) + math.log(P["adv"][tagged[-1][1]])
        return out
    noun_phrase(2, p_object, lang.object_probs(verb))
    if m.group(3) is None:  # VO
        out[-1] = math.log(VP_PROBS[1] / p_object)
        return out
    out[m.start(3) - 1] = math.log(VP_PROBS[2] / p_object) + math.log(P["prep"][tagged[m.start(3) - 1][1]])
    noun_phrase(3, 1.0, P["noun"])
    out[-1] = 0.0
    return out


def word_probabilities(lang: Language | Mixture) -> dict[str, float]:
    """The exact unigram distribution of the language: expected count of each word per sentence over the
    expected sentence length (the '.' included); of a mixture, the domains' mean counts over their mean
    length."""
    domains = lang.domains if isinstance(lang, Mixture) else (lang,)
    counts, lengths = zip(*map(_expected_counts, domains))
    length = float(np.mean(lengths))
    out = {w: float(c) / length for cls in counts[0] for w, c in
           zip(lang.words[cls], np.mean([cs[cls] for cs in counts], axis=0))}
    out[END] = 1.0 / length
    return out


def _expected_counts(lang: Language) -> tuple[dict[str, np.ndarray], float]:
    """Each class's words' expected counts per sentence, and the expected sentence length (the '.' included)."""
    P = lang.probs
    p_object = VP_PROBS[1] + VP_PROBS[2]  # VO, VOP
    p_pp = VP_PROBS[2]
    noun_phrases = 1 + p_object + p_pp
    adjectives_per_np = float(NP_ADJECTIVES @ np.arange(3))
    object_nouns = sum(P["verb"][v] * lang.object_probs(v) for v in range(len(P["verb"])))
    expected = {
        "det": noun_phrases * P["det"],
        "adj": noun_phrases * adjectives_per_np * P["adj"],
        "noun": (1 + p_pp) * P["noun"] + p_object * object_nouns,
        "verb": P["verb"],
        "adv": VP_PROBS[3] * P["adv"],
        "prep": p_pp * P["prep"],
    }
    return expected, 1.0 + sum(float(v.sum()) for v in expected.values())  # + the '.'


def complete_sentences(text: str, leading_fragment: bool = True) -> list[list[str]]:
    """The whole sentences in a text (words, without the '.'): the words after the last '.' are cut off,
    and with `leading_fragment`, so are those before the first '.' (a continuation starts mid-sentence)."""
    parts = text.split(f" {END}")
    words = [p.split() for p in parts[:-1]]
    if leading_fragment and words:
        words = words[1:]
    return [w for w in words if w]
