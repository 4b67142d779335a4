"""The recursive driver. Generation 0 learns the human text; then, for each generation g >= 1:
generate -> curate -> mix -> screen -> train -> evaluate -> save.

Model g-1 writes a synthetic training set (scored under generation 0); curation filters it (the data
producer's deduplication, verification, perplexity filter); mixing builds the training pool with human
text; the detector screens the pool as a scraper would; model g trains on what is left and is evaluated.
Each stage is a function of the module that owns it. Every artefact is written atomically and a
generation is marked complete last, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from testbed import batching, curate, language, rundir
from testbed.config import Config, flatten, gen0_diff, read_yaml, to_yaml
from testbed.data import TokenizedCorpus, load_corpus, split_names, tokenize_corpus, windows
from testbed.distributed import check_batch_split, from_main, main_only, map_rows
from testbed.evaluation import (
    EvalSet,
    GroundTruth,
    decode,
    eval_set,
    evaluate,
    ground_truth_set,
    human_samples,
    sample,
    sample_metrics,
)
from testbed.generate import generate_sharded, synthetic_prompts
from testbed.metrics import perplexity, sequence_perplexities, summarize
from testbed.mixing import (
    Examples,
    check_fresh_pool,
    human_examples,
    kept_texts,
    load_synthetic,
    mix,
    save_synthetic,
    synthetic_examples,
)
from testbed.model import autocast, base_model, check_context, load_model, load_tokenizer, reproducible_cpu
from testbed.train import TrainResult, train

GENERATE, TRAIN, EVAL, DETECT = 1, 2, 3, 4  # stage tags for per-stage seeds


def seed_for(seed: int, *parts: int) -> int:
    """A well-mixed 32-bit seed for one stage of one generation (stable across resumes)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def _cpu_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class Inputs:
    """What every generation uses, fixed for the whole run."""

    cfg: Config
    run_dir: Path
    accelerator: Accelerator
    tokenizer: object
    tok: TokenizedCorpus
    human: Examples  # generation 0's training blocks, the human examples of every mix
    fresh: Examples  # unseen human blocks (mixing.human_pool=fresh)
    es: EvalSet
    gt: GroundTruth | None  # the built-in language's exact probabilities
    human_reference: np.ndarray  # held-out human text shaped like synthetic data
    lang: language.Language | None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def amp(self):
        """The run's one autocast context (train.precision) for every forward pass outside training."""
        return autocast(self.cfg.train.precision, self.accelerator.device)

    def log(self, values: dict, step: int) -> None:
        """To the configured trackers (run.log_with), main process only."""
        if self.cfg.run.log_with != "none" and self.main:
            self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)


def prepare(cfg: Config, run_dir: Path, resume: bool) -> tuple[Inputs, torch.nn.Module]:
    """Load every input and check every length before any work; only then does the run directory appear."""
    # accelerate's own mixed precision would patch the trained model's forward only; one explicit autocast
    # context covers every forward of the run instead. train.batch_size is one step's batch over all
    # processes (split_batches), so the effective batch does not depend on the process count.
    log_with = None if cfg.run.log_with == "none" else cfg.run.log_with
    accelerator = Accelerator(mixed_precision="no", gradient_accumulation_steps=cfg.train.grad_accum,
                              dataloader_config=DataLoaderConfiguration(split_batches=True), log_with=log_with,
                              project_dir=str(run_dir))
    check_batch_split(cfg.train.batch_size, accelerator.num_processes)
    batching.reset()  # what fit another run in this process says nothing about this one
    if cfg.run.gen0_from and cfg.run.threads is None and (Path(cfg.run.gen0_from) / "config.yaml").is_file():
        # Sums split over other thread counts differ in the last digits: compute as its generation 0 did.
        cfg.run.threads = (read_yaml(Path(cfg.run.gen0_from) / "config.yaml").get("run") or {}).get("threads")
    if accelerator.device.type == "cpu":  # saved with the config below: a resume uses the same thread count
        cfg.run.threads = reproducible_cpu(cfg.run.threads)
    if not accelerator.is_main_process:
        os.environ["TQDM_DISABLE"] = "1"

    corpus = load_corpus(cfg.data, cfg.run.seed)
    shared = Path(cfg.run.gen0_from) / "tokenizer" if cfg.run.gen0_from else None
    saved = run_dir / "tokenizer" if resume else shared
    if saved is not None and saved.is_dir():  # the run's own, or that of the run its generation 0 comes from
        tokenizer = AutoTokenizer.from_pretrained(saved)
        tokenizer.padding_side = "left"
    else:  # made once: BPE training need not give the same merges in two processes
        tokenizer = from_main(accelerator, lambda: load_tokenizer(cfg, corpus.train))
    tok = tokenize_corpus(corpus, tokenizer, cfg.data, split_names(cfg.data))
    human, fresh = human_examples(tok.train), human_examples(tok.train_pool)
    n_synthetic = cfg.generation.num_samples or len(human)
    check_fresh_pool(cfg.mixing, n_synthetic, cfg.run.generations, len(fresh))
    model = base_model(cfg, tokenizer).to(accelerator.device)
    check_context(cfg, model)
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    es = eval_set(cfg, tok, corpus.train, bos, model.get_input_embeddings().num_embeddings)
    builtin = cfg.data.source == "builtin"
    gt = ground_truth_set(cfg, corpus.test, tokenizer) if builtin else None
    g = cfg.generation
    _, reference = windows(tok.test_stream, cfg.data.block_size, g.prompt_tokens if g.mode == "prompted" else 0,
                           g.max_new_tokens, "the human test split")
    x = Inputs(cfg, run_dir, accelerator, tokenizer, tok, human, fresh, es, gt, reference,
               gt.lang if builtin else None)

    def first_files(d: Path) -> None:
        (d / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        tokenizer.save_pretrained(d / "tokenizer")

    with main_only(accelerator):
        if x.main and not resume:
            rundir.create(run_dir, first_files)
        if x.main:
            rundir.remove_partial_writes(run_dir)
            rundir.write_environment(run_dir, accelerator)
    if log_with:
        accelerator.init_trackers("testbed", config={k: v for k, v in flatten(cfg.to_dict()).items()
                                                      if isinstance(v, (int, float, str, bool))})
    return x, model


# ---------------------------------------------------------------------------------------------
# Stages that need the run's inputs.


def synthesize(x: Inputs, model, g: int) -> tuple[Examples, list[str]]:
    """Model g-1 writes generation g's synthetic set (batched, seeded, split across processes)."""
    cfg, tokenizer = x.cfg, x.tokenizer
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    prompts = synthetic_prompts(cfg, x.tok.train, seed_for(cfg.run.seed, g, GENERATE), bos)
    with x.amp():
        ids, lengths = generate_sharded(model, prompts, cfg.generation, cfg.generation.max_new_tokens,
                                        cfg.generation.batch_size, seed_for(cfg.run.seed, g, GENERATE), eos,
                                        x.accelerator, desc=f"gen {g} generate")
    return synthetic_examples(ids, lengths, g), decode(tokenizer, ids, lengths)


def score_under_gen0(x: Inputs, gen0, examples: Examples) -> np.ndarray:
    """Per-sequence perplexity of examples under generation 0, each process scoring a share."""
    score = partial(sequence_perplexities, gen0, batch_size=x.cfg.eval.batch_size, desc="score under gen 0")
    with x.amp():
        return np.concatenate(map_rows(x.accelerator, score, examples.ids, examples.lengths))


def enough_to_train(train_set: Examples, cfg: Config) -> bool:
    """At least one block of text, or the generation keeps the weights it starts from (and says so)."""
    if int(train_set.lengths.sum()) >= cfg.data.block_size:
        return True
    tqdm.write(f"warning: curation left {int(train_set.lengths.sum())} tokens, less than one block "
               f"(data.block_size={cfg.data.block_size}): this generation is not trained")
    return False


def train_generation(x: Inputs, model, train_set: Examples, g: int, step_offset: int) -> TrainResult:
    """Train model g in place on its training set, ending on the checkpoint best on human validation."""
    cfg = x.cfg
    epochs = cfg.train.gen0_epochs if g == 0 and cfg.train.gen0_epochs else cfg.train.epochs
    separator = x.tokenizer.eos_token_id if cfg.train.eos_between_examples else None
    return train(model, train_set, x.tok.valid, cfg.train, cfg.data.block_size, x.accelerator,
                 seed_for(cfg.run.seed, g, TRAIN), epochs, desc=f"gen {g} train", separator=separator,
                 log=lambda values, step: x.log(values, step_offset + step))


def evaluate_generation(x: Inputs, model, gen0) -> tuple[dict, list[dict]]:
    """A model's metrics row and per-sample records: fixed prompts and seed in every generation."""
    with x.amp():
        samples = sample(model, x.cfg, x.es, x.tokenizer, seed_for(x.cfg.run.seed, EVAL))
        return evaluate(model, gen0, x.cfg, x.es, samples, x.gt)


def human_baseline(x: Inputs, gen0) -> tuple[dict, list[dict]]:
    """The same sample metrics on the human continuations of the evaluation prompts, and the per-sequence
    perplexities under generation 0 of held-out human text shaped like synthetic data."""
    with x.amp():
        row, records = sample_metrics(human_samples(x.es, x.tokenizer), gen0, None, x.cfg, x.es, x.gt)
        ppl = sequence_perplexities(gen0, x.human_reference, batch_size=x.cfg.eval.batch_size)
    return {"generation": "human", **row, **summarize(ppl, "synthetic_ppl_gen0"), "ppl_gen0_per_sequence": ppl}, \
        records


def save(x: Inputs, g: int, model, row: dict, records: list[dict], seconds: dict, result: TrainResult,
         rows: list[dict]) -> None:
    """Checkpoint, per-sample records, metrics; the COMPLETE marker last. Wall times go beside the metrics,
    not in them, so a resumed run's metrics.jsonl equals an uninterrupted one's."""
    out = rundir.gen_dir(x.run_dir, g)
    rundir.save_pretrained(out / "model", model, x.tokenizer)
    rundir.write_jsonl(out / "samples.jsonl", [rundir.finite(r) for r in records])
    rundir.write_json(out / "metrics.json", row)
    rundir.write_json(out / "timing.json", {"seconds": seconds,
                                            "train_tokens_per_s": result.tokens / max(result.seconds, 1e-9),
                                            "batch_sizes": batching.used()})  # issue 18: batches that fit
    rows.append(row)
    rundir.write_jsonl(x.run_dir / "metrics.jsonl", rows)
    rundir.mark_complete(x.run_dir, g)
    rundir.prune_checkpoints(x.run_dir, g, x.cfg.run.keep_checkpoints)
    x.log({f"generation/{k}": v for k, v in row.items()}, g)
    tqdm.write(f"gen {g}/{x.cfg.run.generations}: ppl_human {row['ppl_human']:.2f}  "
               f"distinct_4 {row['distinct_4']:.3f}  self_bleu {row['self_bleu']:.3f}  "
               + "  ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))


def _train_record(result: TrainResult) -> dict:
    return {"val_loss": result.val_loss, "train_loss": result.train_loss, "best_epoch": result.best_epoch,
            "train_steps": result.steps, "train_tokens": result.tokens}


def take_gen0(x: Inputs, model) -> TrainResult:
    """Generation 0 of another run (run.gen0_from) instead of training it: its weights and training record."""
    source = Path(x.cfg.run.gen0_from)
    if not rundir.is_complete(source, 0):
        raise rundir.RunDirError(f"run.gen0_from: {source} has no complete generation 0")
    from testbed import config

    other = config.from_dict(config.read_yaml(source / "config.yaml"))
    differ = gen0_diff(other, x.cfg)
    if differ:
        raise config.ConfigError(f"config key 'run.gen0_from': {source} trained its generation 0 with other values "
                                 f"of {', '.join(differ)}")
    model.load_state_dict(load_model(str(rundir.gen_dir(source, 0) / "model")).state_dict())
    model.eval()
    r = json.loads((rundir.gen_dir(source, 0) / "metrics.json").read_text())
    if x.main:
        rundir.write_json(rundir.gen_dir(x.run_dir, 0) / "source.json", {"gen0_from": str(source.resolve())})
    return TrainResult(steps=r["train_steps"], tokens=r["train_tokens"], seconds=0.0, train_loss=r["train_loss"],
                       val_loss=r["val_loss"], best_epoch=r["best_epoch"])


# ---------------------------------------------------------------------------------------------
# The driver.


def run(cfg: Config, run_dir: Path, resume: bool = False) -> tuple[list[dict], dict]:
    """Run (or resume) every generation of `cfg` in `run_dir`; return the metrics rows and the human baseline."""
    x, model = prepare(cfg, run_dir, resume)
    device, seed, N = x.accelerator.device, cfg.run.seed, cfg.run.generations

    # Resume: completed generations are read back, the newest model is reloaded.
    start = rundir.completed(run_dir, N)
    rows = [json.loads((rundir.gen_dir(run_dir, g) / "metrics.json").read_text()) for g in range(start)]
    synthetic = [load_synthetic(rundir.gen_dir(run_dir, g) / "synthetic") for g in range(1, start)]
    gen0 = None
    if start > 0:
        model = load_model(str(rundir.gen_dir(run_dir, start - 1) / "model")).to(device)
        gen0 = load_model(str(rundir.gen_dir(run_dir, 0) / "model")).to(device).eval()
        tqdm.write(f"resuming {run_dir} at generation {start} ({start} complete)")
    # The detector's view of the human text is decided once (oracle flags: seeded by the run).
    curate.detect(x.human, cfg, model.config, device, np.random.default_rng([seed, DETECT, 0]))
    curate.detect(x.fresh, cfg, model.config, device, np.random.default_rng([seed, DETECT, 1]))
    # Deduplication reaches back over earlier generations only when their data stays in the pool.
    accumulating = cfg.mixing.strategy in ("accumulate", "accumulate_subsample")
    dedup = curate.Deduplicator(cfg.curate)
    if accumulating:
        for g in range(1, start):
            dedup.keep(kept_texts(rundir.gen_dir(run_dir, g) / "synthetic"))
    steps = sum(r["train_steps"] for r in rows)  # the trackers' global step

    if start == 0:  # Generation 0: the base model's zero-shot score, then training on human text.
        rundir.gen_dir(run_dir, 0).mkdir(exist_ok=True)
        with main_only(x.accelerator), x.amp():
            zero_shot = perplexity(model, x.es.test_blocks, cfg.eval.batch_size, desc="zero-shot ppl") \
                if x.main else None
        t = time.perf_counter()
        result = take_gen0(x, model) if cfg.run.gen0_from else train_generation(x, model, x.human, 0, steps)
        seconds = {"train": time.perf_counter() - t}
        steps += result.steps
        gen0 = copy.deepcopy(model).eval()
        with main_only(x.accelerator):
            if x.main:
                t = time.perf_counter()
                row, records = evaluate_generation(x, model, gen0)
                seconds["evaluate"] = time.perf_counter() - t
                row = rundir.finite({"generation": 0, **row, "ppl_human_zero_shot": zero_shot,
                                     **summarize(np.zeros(0), "synthetic_ppl_gen0"), **_train_record(result),
                                     "train_composition": x.human.composition(), "synthetic_mean_length": None})
                save(x, 0, model, row, records, seconds, result, rows)

    # The human baseline, once: the floor and reference of every sample metric.
    baseline_path = run_dir / "human_baseline.json"
    with main_only(x.accelerator):
        if x.main and not baseline_path.is_file():
            baseline, records = human_baseline(x, gen0)
            rundir.write_json(baseline_path, rundir.finite(baseline))
            rundir.write_jsonl(run_dir / "human_samples.jsonl", [rundir.finite(r) for r in records])
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else {}
    ppl_ceiling = float(np.nanpercentile(baseline["ppl_gen0_per_sequence"], 99)) if baseline else np.inf
    # train.init: the weights every generation g >= 1 starts from (previous: model g-1, as it is).
    start_state = {"base": lambda: _cpu_state(base_model(cfg, x.tokenizer)), "gen0": lambda: _cpu_state(gen0),
                   "previous": lambda: None}[cfg.train.init]()

    for g in range(max(start, 1), N + 1):
        out = rundir.gen_dir(run_dir, g)
        out.mkdir(exist_ok=True)
        seconds: dict[str, float] = {}

        # 1. Generate: model g-1 writes this generation's synthetic set, scored under generation 0.
        t = time.perf_counter()
        synth, texts = synthesize(x, model, g)
        seconds["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        ppl_gen0 = score_under_gen0(x, gen0, synth)
        curate.detect(synth, cfg, model.config, device, np.random.default_rng([seed, DETECT, g + 1]))
        seconds["score"] = time.perf_counter() - t

        # 2. Curate: the producer's filters decide which synthetic examples may be used at all.
        if not accumulating:
            dedup = curate.Deduplicator(cfg.curate)
        dropped_by = curate.filter_synthetic(cfg, texts, ppl_gen0, dedup, x.lang, ppl_ceiling)
        synthetic.append(synth.take(dropped_by == curate.KEPT))
        with main_only(x.accelerator):
            if x.main:  # every example with its provenance, scores and curation decisions
                save_synthetic(out / "synthetic", synth, texts, {"ppl_gen0": ppl_gen0, "z_score": synth.z,
                                                                 "flagged": synth.flagged, "dropped_by": dropped_by})

        # 3. Mix: the strategy builds the training pool. 4. Screen: the detector drops what it flags.
        pool = mix(cfg.mixing, x.human, synthetic, g, seed, fresh=x.fresh, total=len(synth))
        train_set = curate.screen(pool, cfg.curate, np.random.default_rng([seed, DETECT, g, 2]))

        # 5. Train: from the weights train.init names (curation may leave too little text to train on).
        if start_state is not None:
            model.load_state_dict(start_state)
        result = train_generation(x, model, train_set, g, steps) if enough_to_train(train_set, cfg) \
            else TrainResult(steps=0, tokens=0, seconds=0.0, train_loss=np.nan, val_loss=np.nan, best_epoch=0.0)
        steps += result.steps
        seconds["train"] = result.seconds

        # 6. Evaluate and 7. save, on the main process (the others wait, and stop with its error if it fails).
        with main_only(x.accelerator):
            if not x.main:
                continue
            t = time.perf_counter()
            row, records = evaluate_generation(x, model, gen0)
            seconds["evaluate"] = time.perf_counter() - t
            row = rundir.finite({"generation": g, **row, **summarize(ppl_gen0, "synthetic_ppl_gen0"),
                                 **_train_record(result), "train_composition": train_set.composition(),
                                 "synthetic_mean_length": float(synth.lengths.mean()),
                                 **curate.curation_row(dropped_by, synth, x.human, pool,
                                                       cfg.curate.detector != "none")})
            save(x, g, model, row, records, seconds, result, rows)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    if cfg.run.keep_checkpoints == "none" and N >= 1 and x.main:
        rundir.prune_checkpoints(run_dir, N + 1, "none")
    if cfg.run.log_with != "none":
        x.accelerator.end_training()
    return rows, baseline
