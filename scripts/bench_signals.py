"""What the early-warning signals cost per generation, on a finished run's models (best of 3 each).

    python scripts/bench_signals.py RUN_DIR     # e.g. a finished `testbed run` (gen_000 and a later model)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer

from testbed import config
from testbed.data import load_corpus, tokenize_corpus
from testbed.evaluation import eval_set, sample
from testbed.metrics.perplexity import perplexity, sequence_nll
from testbed.metrics.signals import embedding_diversity, next_token_stats, tail_token_mass, unigram_kl, valid_tokens
from testbed.metrics.text import rep_n_per_sample
from testbed.model import load_model


def best(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(run: Path) -> None:
    cfg = config.from_dict(config.read_yaml(run / "config.yaml"))
    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    tokenizer.padding_side = "left"
    corpus = load_corpus(cfg.data, cfg.run.seed)
    tok = tokenize_corpus(corpus, tokenizer, cfg.data)
    last = max(run.glob("gen_*/model"))
    model, gen0 = load_model(str(last)).eval(), load_model(str(run / "gen_000" / "model")).eval()
    es = eval_set(cfg, corpus, tok, tokenizer, model.get_input_embeddings().num_embeddings)
    s = sample(model, cfg, es, tokenizer, 0)
    b, tokens = cfg.eval.batch_size, valid_tokens(s.ids, s.lengths)
    plain = best(lambda: perplexity(model, es.test_blocks, b))
    stats = best(lambda: next_token_stats(model, es.test_blocks, b, with_rank=True))
    nll0 = best(lambda: sequence_nll(gen0, s.ids, s.lengths, b))
    nll = best(lambda: sequence_nll(model, s.ids, s.lengths, b))
    emb = best(lambda: embedding_diversity(gen0, s.ids, s.lengths, b))
    cheap = best(lambda: (tail_token_mass(tokens, es.human_tokens, cfg.eval.tail_tokens),
                          unigram_kl(es.human_tokens, tokens, es.vocab_size, cfg.eval.kl_alpha),
                          rep_n_per_sample(s.texts, 4)))
    print(f"{last}: perplexity alone {plain:.3f} s; with entropy, confidence and rank {stats:.3f} s")
    print(f"samples: NLL under generation 0 {nll0:.3f} s, under the model {nll:.3f} s; embedding diversity "
          f"{emb:.3f} s; tail-token mass, unigram KL, rep-4 per sample {cheap:.3f} s")
    print(f"the signals add {stats - plain + nll0 + nll + emb + cheap:.3f} s per generation")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
