"""Peak memory and time of two evaluation steps, today's code against the formula it replaced.

    PYTHONPATH=. python scripts/bench_memory.py [--corpus ../shared/data/wikitext-2/train.txt] [--json OUT]

1. Per-sequence scoring (`sequence_nll`) of 256 random blocks of 64 tokens in one batch, under a 1-layer
   width-64 OPT with a 50,272-token vocabulary (OPT's). `forward` is the model call alone, with its
   (batch, length, vocabulary) fp32 logits, 3.3 GB here; `formula` is the first formula (one fp32
   cross-entropy over the whole logits); `before` is the model's whole logits with the cross-entropy taken
   in chunks (testbed until the LM head was chunked); `after` is testbed's: the base model's final hidden
   states, then the LM head a chunk of positions at a time, so the whole logits never exist.
2. `rare_ngrams(lines, 1000, 1)` over the corpus's lines (WikiText-2 train: 2M words): `before` is
   the old fixed-width numpy unicode arrays of the whole corpus, `after` testbed's Counter of distinct
   words. Skipped with a message when the corpus file is absent.

Each measurement runs in a fresh subprocess, so allocator caches and earlier peaks of one cannot hide
another's. Peak memory is the resident-set high-water mark (`ru_maxrss`, which counts torch's and
numpy's buffers, unlike tracemalloc): after the model is built, the inputs made or the corpus read and
a warm-up call, the high-water mark is reset to the current RSS through /proc/self/clear_refs (Linux
>= 4.0; elsewhere it stays the high-water mark so far, which can only understate the peak), and the
figure is ru_maxrss after the call minus ru_maxrss before it. PYTHONPATH=. makes the subprocesses
measure this checkout's testbed rather than an installed one; the path measured is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VOCAB, BATCH, BLOCK = 50_272, 256, 64


class IdTokenizer:
    """Just enough of a tokenizer to size a model (as in bench.py): ids 0..vocab-1, 0 as bos/eos/pad."""

    def __init__(self, vocab: int):
        self.vocab, self.bos_token_id, self.eos_token_id, self.pad_token_id = vocab, 0, 0, 0

    def __len__(self) -> int:
        return self.vocab


def reset_peak() -> int:
    """Reset the RSS high-water mark to the current RSS where Linux allows it; return ru_maxrss in bytes."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return max_rss()


def max_rss() -> int:
    """The RSS high-water mark in bytes: Linux's VmHWM, which clear_refs resets (ru_maxrss also keeps the
    mark an exiting thread left, so a reset may not lower it); elsewhere ru_maxrss (macOS reports bytes)."""
    status = Path("/proc/self/status")
    if status.is_file():
        kib = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
        if kib:
            return int(kib.group(1)) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def formula_sequence_nll(model, ids: np.ndarray) -> np.ndarray:
    """The first scoring of full blocks (summed NLL per row): fp32 logits and their log-softmax over the
    whole batch at once."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        x = torch.as_tensor(ids)
        mask = torch.ones_like(x, dtype=torch.bool)
        logits = model(input_ids=x, attention_mask=mask.long()).logits[:, :-1].float()
        target_mask = mask[:, 1:] & mask[:, :-1]
        token_nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                    reduction="none").view(target_mask.shape)
        return (token_nll * target_mask).sum(dim=1).double().numpy()


def old_ngram_strings(samples: list[str], n: int) -> np.ndarray:
    """The replaced n-gram extraction: one fixed-width unicode array of every n-gram of the corpus."""
    seqs = [s.split() for s in samples]
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    tokens = np.asarray(list(itertools.chain.from_iterable(seqs)), dtype=str)
    owner = np.repeat(np.arange(len(seqs)), lengths)
    starts = np.arange(max(len(tokens) - n + 1, 0))
    starts = starts[owner[starts] == owner[starts + n - 1]]
    grams = tokens[starts]
    for j in range(1, n):
        grams = np.char.add(np.char.add(grams, "\x1f"), tokens[starts + j])
    return grams


def old_rare_ngrams(reference: list[str], tail_rank: int, n: int = 1) -> np.ndarray:
    """The replaced rare_ngrams(...).grams."""
    values, counts = np.unique(old_ngram_strings(reference, n), return_counts=True)
    return values[np.lexsort((values, -counts))][tail_rank:]


def measure_scoring(mode: str) -> dict:
    """Peak extra memory and seconds of scoring BATCH blocks in one batch (run in a fresh process)."""
    import torch

    from testbed.config import ModelConfig
    from testbed.metrics.perplexity import sequence_nll, token_nll
    from testbed.model import build_model

    model = build_model(ModelConfig(arch="opt", layers=1, width=64, heads=2, context=128), IdTokenizer(VOCAB), seed=0)
    model.eval()
    ids = np.random.default_rng(0).integers(1, VOCAB, size=(BATCH, BLOCK))

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            model(input_ids=torch.as_tensor(x))
        return np.zeros(len(x))

    def logits_then_chunks(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.as_tensor(x)
            return token_nll(model(input_ids=x).logits, x[:, 1:]).sum(dim=1).double().numpy()

    run = {"forward": forward, "formula": lambda x: formula_sequence_nll(model, x), "before": logits_then_chunks,
           "after": lambda x: sequence_nll(model, x, batch_size=BATCH)[0]}[mode]
    run(ids[:2])  # warm-up: thread pools and kernels load outside the measurement
    base = reset_peak()
    t = time.perf_counter()
    nll = run(ids)
    return {"seconds": time.perf_counter() - t, "peak_bytes": max_rss() - base, "nll": nll.tolist()}


def measure_rare(mode: str, corpus: str) -> dict:
    """Peak extra memory and seconds of rare_ngrams(lines, 1000, 1) over the corpus (in a fresh process)."""
    from testbed.metrics.text import rare_ngrams

    lines = Path(corpus).read_text(encoding="utf-8").splitlines()
    run = {"before": lambda: old_rare_ngrams(lines, 1000), "after": lambda: rare_ngrams(lines, 1000).grams}[mode]
    base = reset_peak()
    t = time.perf_counter()
    grams = run()
    return {"seconds": time.perf_counter() - t, "peak_bytes": max_rss() - base, "tail": len(grams),
            "words": sum(len(line.split()) for line in lines),
            "sha256": hashlib.sha256("\n".join(grams.tolist()).encode()).hexdigest()}


def in_subprocess(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/data/wikitext-2/train.txt")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, mode, *rest = args.child
        print(json.dumps(measure_scoring(mode) if kind == "scoring" else measure_rare(mode, *rest)))
        return

    import testbed

    print(f"testbed measured: {Path(testbed.__file__).parent}")
    print(f"\n1. sequence_nll, {BATCH} blocks x {BLOCK} tokens in one batch, vocabulary {VOCAB:,}, CPU, fp32")
    print(f"   logits alone: {BATCH * BLOCK * VOCAB * 4 / 1e9:.2f} GB")
    print(f"{'':>12}{'peak extra (GB)':>17}{'over forward (GB)':>19}{'seconds':>9}")
    scoring = {mode: in_subprocess("scoring", mode) for mode in ("forward", "formula", "before", "after")}
    for mode, r in scoring.items():
        over = (r["peak_bytes"] - scoring["forward"]["peak_bytes"]) / 1e9
        print(f"{mode:>12}{r['peak_bytes'] / 1e9:>17.2f}{over:>19.2f}{r['seconds']:>9.2f}")
    after = np.array(scoring["after"]["nll"])
    for mode in ("formula", "before"):
        other = np.array(scoring[mode]["nll"])
        print(f"   largest relative difference of the per-row NLL, after vs {mode}: "
              f"{np.max(np.abs(after - other) / np.abs(other)):.1e}")
    results: dict = {"scoring": {m: {k: r[k] for k in ("seconds", "peak_bytes")} for m, r in scoring.items()}}

    print(f"\n2. rare_ngrams(lines, 1000, 1) over {args.corpus}")
    if not Path(args.corpus).is_file():
        print(f"   skipped: {args.corpus} does not exist (pass --corpus PATH to a one-document-per-line text file)")
    else:
        rare = {mode: in_subprocess("rare", mode, args.corpus) for mode in ("before", "after")}
        print(f"   {rare['after']['words']:,} words, tail of {rare['after']['tail']:,} distinct words, "
              f"identical before and after: {rare['before']['sha256'] == rare['after']['sha256']}")
        print(f"{'':>12}{'peak extra (MB)':>17}{'seconds':>9}")
        for mode, r in rare.items():
            print(f"{mode:>12}{r['peak_bytes'] / 1e6:>17.1f}{r['seconds']:>9.2f}")
        results["rare_ngrams"] = {m: {k: r[k] for k in ("seconds", "peak_bytes")} for m, r in rare.items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
