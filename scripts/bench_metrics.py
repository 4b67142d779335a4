"""Benchmark self-BLEU: testbed's linear-time version at N = 300, 2,000, 10,000 samples of ~20 tokens,
and the speed-up over nltk (the O(N^2) Texygen loop) at N = 300, measured in the same run.

    python scripts/bench_metrics.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from testbed import language
from testbed.config import LanguageConfig
from testbed.metrics.text import distinct_n, self_bleu


def samples(n: int, seed: int = 0) -> list[str]:
    """n sentences of the built-in language (about 6-20 words each), joined to ~20 tokens."""
    lang = language.build(LanguageConfig())
    sents = language.sample_sentences(lang, 3 * n, np.random.default_rng(seed))
    return [" ".join(sents[3 * i : 3 * i + 3]).split()[:20] for i in range(n)]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def nltk_self_bleu(data: list[list[str]]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    sm = SmoothingFunction().method1
    w = (0.25,) * 4
    return float(np.mean([sentence_bleu(data[:i] + data[i + 1 :], data[i], w, smoothing_function=sm)
                          for i in range(len(data))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    results: dict[str, float] = {}
    print(f"{'N':>7}  {'tokens':>8}  {'self_bleu (s)':>13}  {'distinct_4 (s)':>14}  value")
    for n in (300, 2000, 10000):
        data = samples(n)
        value = self_bleu(data)
        sec = best_of(lambda d=data: self_bleu(d), 3)
        dsec = best_of(lambda d=data: distinct_n(d, 4), 3)
        results[f"self_bleu_seconds_n{n}"] = sec
        print(f"{n:>7}  {sum(map(len, data)):>8}  {sec:>13.4f}  {dsec:>14.4f}  {value:.6f}")

    data = samples(300)
    t = time.perf_counter()
    reference = nltk_self_bleu(data)
    nltk_sec = time.perf_counter() - t
    ours = self_bleu(data)
    results.update(nltk_seconds_n300=nltk_sec, speedup_vs_nltk_n300=nltk_sec / results["self_bleu_seconds_n300"],
                   abs_difference_n300=abs(ours - reference))
    print(f"\nnltk at N=300: {nltk_sec:.2f} s (value {reference:.6f}, |difference| {abs(ours - reference):.1e})")
    print(f"speed-up over nltk at N=300: {results['speedup_vs_nltk_n300']:.0f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
