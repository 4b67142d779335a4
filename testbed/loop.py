"""The recursive driver. For each generation: generate -> mix -> train -> evaluate -> save.

Generation 0 trains the base model on human text. Generation g >= 1 lets model g-1 write a synthetic
training set, mixes it with human text, trains model g on the mix and evaluates it. Every artefact is
written atomically and a generation is marked complete last, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from testbed import rundir
from testbed.config import Config, to_yaml
from testbed.data import load_corpus, pad_rows, split_names, tokenize_corpus, windows
from testbed.distributed import check_batch_split, from_main, main_only, map_rows
from testbed.evaluation import (
    decode,
    diversity,
    eval_set,
    ground_truth_set,
    human_texts,
    kl_per_word,
    sample,
    sample_quality,
)
from testbed.generate import generate_sharded, prompt_matrix
from testbed.metrics import perplexity, sequence_perplexities, summarize
from testbed.mixing import Examples, human_examples, mix, synthetic_examples
from testbed.model import autocast, base_model, check_context, load_model, load_tokenizer, reproducible_cpu
from testbed.train import train

GENERATE, TRAIN, EVAL = 1, 2, 3  # stage tags for per-stage seeds


def seed_for(seed: int, *parts: int) -> int:
    """A well-mixed 32-bit seed for one stage of one generation (stable across resumes)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def _finite(row: dict) -> dict:
    """NaN/inf become null, so metrics.jsonl is strict JSON."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}


def _cpu_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def write_synthetic(path: Path, synth: Examples, texts: list[str], ppl_gen0: np.ndarray) -> None:
    rows = [{"index": i, "source": s, "generation": int(g), "text": t, "input_ids": ids[:n], "ppl_gen0": p}
            for i, (s, g, t, ids, n, p) in enumerate(zip(synth.source, synth.generation, texts,
                                                          synth.ids.tolist(), synth.lengths.tolist(),
                                                          ppl_gen0.tolist()))]
    rundir.write_jsonl(path, [_finite(r) for r in rows])


def read_synthetic(path: Path, generation: int) -> Examples:
    rows = [r["input_ids"] for r in rundir.read_jsonl(path)]
    return synthetic_examples(pad_rows(rows, fill=0), np.array([len(r) for r in rows]), generation)


def run(cfg: Config, run_dir: Path, resume: bool = False) -> tuple[list[dict], dict]:
    """Run (or resume) every generation of `cfg` in `run_dir`; return the metrics rows and the human baseline."""
    seed, N = cfg.run.seed, cfg.run.generations
    g_cfg = cfg.generation
    # accelerate's own mixed precision would patch the trained model's forward only; one explicit
    # autocast context (train.precision) covers every forward of the run instead.
    # train.batch_size is one step's batch over all processes (split_batches: each takes an equal share),
    # so the effective batch, batch_size x grad_accum, does not depend on the process count.
    accelerator = Accelerator(mixed_precision="no", gradient_accumulation_steps=cfg.train.grad_accum,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    check_batch_split(cfg.train.batch_size, accelerator.num_processes)
    device = accelerator.device
    if device.type == "cpu":  # saved with the config below: a resume uses the same thread count
        cfg.run.threads = reproducible_cpu(cfg.run.threads)

    def amp():
        return autocast(cfg.train.precision, device)

    # Under `accelerate launch`, every process generates and scores a share and trains data-parallel; the
    # main process alone evaluates and writes, inside main_only blocks, so that its failure stops them all.
    main = accelerator.is_main_process
    if not main:
        os.environ["TQDM_DISABLE"] = "1"

    # Human text, tokenizer, base model and the fixed evaluation set.
    corpus = load_corpus(cfg.data, seed)
    saved_tokenizer = run_dir / "tokenizer"
    if resume and saved_tokenizer.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(saved_tokenizer)
        tokenizer.padding_side = "left"
    else:  # made once: BPE training need not give the same merges in two processes
        tokenizer = from_main(accelerator, lambda: load_tokenizer(cfg, corpus.train))
    tok = tokenize_corpus(corpus, tokenizer, cfg.data, split_names(cfg.data))
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    separator = eos if cfg.train.eos_between_examples else None
    human = human_examples(tok.train)
    model = base_model(cfg, tokenizer).to(device)
    check_context(cfg, model)  # every length is checked before any work
    es = eval_set(cfg, tok, corpus.train, bos)
    gt = ground_truth_set(cfg, corpus.test, tokenizer) if cfg.data.source == "builtin" else None
    prompted = g_cfg.mode == "prompted"
    # Held-out human text shaped like synthetic data: what follows a generation prompt in the test stream.
    _, human_reference = windows(tok.test_stream, cfg.data.block_size, g_cfg.prompt_tokens if prompted else 0,
                                 g_cfg.max_new_tokens, "the human test split")

    def first_files(d: Path) -> None:
        (d / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        tokenizer.save_pretrained(d / "tokenizer")

    with main_only(accelerator):
        if main and not resume:  # only now, once every input has loaded, does the run directory appear
            rundir.create(run_dir, first_files)
        if main:
            rundir.remove_partial_writes(run_dir)

    # Resume: completed generations are read back, the newest model is reloaded.
    start = rundir.completed(run_dir, N)
    rows = [json.loads((rundir.gen_dir(run_dir, g) / "metrics.json").read_text()) for g in range(start)]
    synthetic = [read_synthetic(rundir.gen_dir(run_dir, g) / "synthetic.jsonl", g) for g in range(1, start)]
    gen0 = None
    if start > 0:
        model = load_model(str(rundir.gen_dir(run_dir, start - 1) / "model")).to(device)
        gen0 = load_model(str(rundir.gen_dir(run_dir, 0) / "model")).to(device).eval()
        tqdm.write(f"resuming {run_dir} at generation {start} ({start} complete)")
    # train.init: the weights every generation g >= 1 starts from (previous: model g-1, as it is).
    init_state = {"base": lambda: _cpu_state(base_model(cfg, tokenizer)), "gen0": lambda: _cpu_state(gen0),
                  "previous": lambda: None}[cfg.train.init]
    start_state = init_state() if start > 0 else None
    baseline_path = run_dir / "human_baseline.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else {}

    for g in range(start, N + 1):
        out = rundir.gen_dir(run_dir, g)
        out.mkdir(exist_ok=True)
        seconds: dict[str, float] = {}

        # 1. Generate: model g-1 writes this generation's synthetic set, scored under generation 0.
        synth_ppl = np.zeros(0)  # generation 0 has no synthetic data: its statistics are null
        if g == 0:
            train_set = human
            with main_only(accelerator), amp():
                if main:  # the base model before any training: the zero-shot row
                    zero_shot = perplexity(model, es.test_blocks, cfg.eval.batch_size, desc="zero-shot ppl")
        else:
            t = time.perf_counter()
            n = g_cfg.num_samples or len(human)
            prompts = (prompt_matrix(tok.train, n, g_cfg.prompt_tokens) if prompted
                       else np.full((n, 1), bos, dtype=np.int64))
            with amp():
                ids, lengths = generate_sharded(model, prompts, g_cfg, g_cfg.max_new_tokens, g_cfg.batch_size,
                                                seed_for(seed, g, GENERATE), eos, accelerator,
                                                desc=f"gen {g} generate")
            synth = synthetic_examples(ids, lengths, g)
            synthetic.append(synth)
            seconds["generate"] = time.perf_counter() - t
            t = time.perf_counter()
            with amp():
                score = partial(sequence_perplexities, gen0, batch_size=cfg.eval.batch_size, desc="score under gen 0")
                synth_ppl = np.concatenate(map_rows(accelerator, score, ids, lengths))
            with main_only(accelerator):
                if main:
                    write_synthetic(out / "synthetic.jsonl", synth, decode(tokenizer, ids, lengths), synth_ppl)
            seconds["score"] = time.perf_counter() - t

            # 2. Mix: the strategy decides what model g trains on.
            train_set = mix(cfg.mixing, human, synthetic, g, seed)
            if start_state is not None:
                model.load_state_dict(start_state)

        # 3. Train (in place), ending on the checkpoint best on human validation text.
        epochs = cfg.train.gen0_epochs if g == 0 and cfg.train.gen0_epochs else cfg.train.epochs
        result = train(model, train_set, tok.valid, cfg.train, cfg.data.block_size, accelerator,
                       seed_for(seed, g, TRAIN), epochs, desc=f"gen {g} train", separator=separator)
        seconds["train"] = result.seconds
        if g == 0:
            gen0 = copy.deepcopy(model).eval()
            start_state = init_state()
        # The main process evaluates and saves this generation. The others leave the block at once and wait
        # at its end, where they stop with the main process's error if it fails.
        with main_only(accelerator):
            if not main:
                continue

            # 4. Evaluate: perplexity on human test text; diversity of samples from fixed prompts and seed.
            t = time.perf_counter()
            with amp():
                ppl = perplexity(model, es.test_blocks, cfg.eval.batch_size, desc="ppl on human test")
                prompt_texts, texts = sample(model, cfg, es, tokenizer, seed_for(seed, EVAL))
            seconds["evaluate"] = time.perf_counter() - t
            t = time.perf_counter()
            row = {"generation": g, "ppl_human": ppl, **({"ppl_human_zero_shot": zero_shot} if g == 0 else {}),
                   **diversity(texts, es.tail),
                   **summarize(synth_ppl, "synthetic_ppl_gen0"),
                   "val_loss": result.val_loss, "train_loss": result.train_loss, "best_epoch": result.best_epoch,
                   "train_steps": result.steps, "train_tokens": result.tokens,
                   "train_composition": train_set.composition(),
                   "synthetic_mean_length": None if g == 0 else float(synth.lengths.mean())}
            if gt is not None:  # the built-in language's exact probabilities: quality, divergence, tail lost
                with amp():
                    kl = kl_per_word(model, gt, cfg.eval.batch_size)
                row.update(sample_quality(texts, gt, prompted), kl_per_word=kl)
            if g == 0:
                with amp():
                    human_ppl = sequence_perplexities(gen0, human_reference, batch_size=cfg.eval.batch_size)
                reference_texts = human_texts(es, tokenizer)
                baseline = {"generation": "human", **diversity(reference_texts, es.tail),
                            **(sample_quality(reference_texts, gt, prompted) if gt is not None else {}),
                            **summarize(human_ppl, "synthetic_ppl_gen0"), "ppl_gen0_per_sequence": human_ppl}
            seconds["metrics"] = time.perf_counter() - t

            # 5. Save: checkpoint, samples, metrics; the COMPLETE marker goes last. Wall times go beside the
            # metrics, not in them, so a resumed run's metrics.jsonl equals an uninterrupted one's.
            rundir.save_pretrained(out / "model", model, tokenizer)
            rundir.write_jsonl(out / "samples.jsonl", [{"index": i, "prompt": p, "text": s}
                                                       for i, (p, s) in enumerate(zip(prompt_texts, texts))])
            row = _finite(row)
            rundir.write_json(out / "metrics.json", row)
            rundir.write_json(out / "timing.json", {"seconds": seconds,
                                                     "train_tokens_per_s": result.tokens / max(result.seconds, 1e-9)})
            if g == 0:
                rundir.write_json(baseline_path, _finite(baseline))
            rows.append(row)
            rundir.write_jsonl(run_dir / "metrics.jsonl", rows)
            rundir.mark_complete(run_dir, g)
            rundir.prune_checkpoints(run_dir, g, cfg.run.keep_checkpoints)
            tqdm.write(f"gen {g}/{N}: ppl_human {ppl:.2f}  distinct_4 {row['distinct_4']:.3f}  "
                       f"self_bleu {row['self_bleu']:.3f}  "
                       + "  ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    if cfg.run.keep_checkpoints == "none" and N >= 1 and main:
        rundir.prune_checkpoints(run_dir, N + 1, "none")
    return rows, baseline
