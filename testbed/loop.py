"""The recursive driver. A pretrained base first, when the config asks for one (pretrain); generation 0
learns the human text; then, for each generation g >= 1:
generate -> score -> curate -> mix -> screen -> train -> evaluate -> save.

Model g-1 writes a synthetic training set (scored under generation 0); curation filters it (the data
producer's deduplication, verification, perplexity filter); mixing builds the training pool with human
text; the detector screens the pool as a scraper would; model g trains on what is left and is evaluated.
Each input is built by one call into the module that owns it (data, pretrain, mixing, evaluation; the
starting model: model), each stage is a function of its module (pretrain, generate, curate, mixing, train,
evaluation, rundir); this module only sets the run up and calls them in order. Every artefact is written
atomically and a generation is marked complete last, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from tqdm.auto import tqdm

from testbed import (
    batching,
    config,
    curate,
    evaluation,
    generate,
    mixing,
    numerics,
    pretrain,
    rundir,
    seeding,
    train,
)
from testbed.config import Config
from testbed.data import TokenizedCorpus, load_corpus, tokenize_corpus
from testbed.distributed import check_batch_split, on_main
from testbed.language import Language, Mixture
from testbed.metrics import phases, registry
from testbed.metrics.text import summarize
from testbed.mixing import Examples
from testbed.model import check_context, reproducible_cpu, run_base, run_tokenizer, saved_model, start_model
from testbed.sweep import sharing


@contextlib.contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Wall time of the block, into seconds[stage]: the one way a stage's time (timing.json) is taken, so a
    key spans the same work in every generation."""
    start = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - start


@dataclass
class Context:
    """What every generation uses, fixed for the whole run."""

    cfg: Config
    run_dir: Path
    accelerator: Accelerator
    tokenizer: object
    corpus: TokenizedCorpus
    human: Examples  # generation 0's training blocks, the human examples of every mix
    fresh: Examples  # unseen human blocks (mixing.human_pool=fresh)
    pretraining: pretrain.Corpus | None  # the pretrained base's corpus (pretrain.source), else None
    es: evaluation.EvalSet
    lang: Language | Mixture | None  # the built-in language of the human text (the verifier's grammar)

    def log(self, values: dict, step: int) -> None:
        """To the configured trackers (run.log_with), main process only."""
        if self.cfg.run.log_with != "none" and self.accelerator.is_main_process:
            self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)


@dataclass
class State:
    """What the generations hand on: the newest model, generation 0, the rows and synthetic sets so far."""

    model: torch.nn.Module  # the newest model: model g-1 while generation g runs
    start: int  # the first generation this start of the run computes (0, or where a resume begins)
    gen0: torch.nn.Module | None = None
    rows: list[dict] | None = None
    synthetic: list[Examples] | None = None  # the curated synthetic sets of generations 1, 2, ...
    dedup: curate.RunDeduplication | None = None
    steps: int = 0  # the trackers' global step
    ppl_ceiling: float = np.inf  # the perplexity filter's gibberish line (human baseline)
    init: dict | None = None  # train.init's weights (None: each generation starts from the previous model)


def run(cfg: Config, run_dir: Path, resume: bool = False, stop_after: int | None = None) -> tuple[list[dict], dict]:
    """Run (or resume) every generation of `cfg` in `run_dir`, or those up to `stop_after` (a sweep's job for
    the generations other runs share; the rest follows with resume); return the metrics rows and the human
    baseline."""
    ctx, state = prepare(cfg, run_dir, resume)
    if state.start == 0:
        if ctx.pretraining is not None and not rundir.is_complete(run_dir, rundir.BASE):
            pretrain_base(ctx, state)
        if stop_after == rundir.BASE:
            return [], {}
        generation_zero(ctx, state)
    baseline = human_baseline(ctx, state)
    if cfg.train.init != "previous":
        state.init = train.weights(run_base(cfg, ctx.tokenizer, run_dir) if cfg.train.init == "base" else state.gen0)
    last = cfg.run.generations if stop_after is None else min(stop_after, cfg.run.generations)
    for g in range(max(state.start, 1), last + 1):
        generation(ctx, state, g)
    if last == cfg.run.generations:
        finish(ctx)
    return state.rows, baseline


# ---------------------------------------------------------------------------------------------
# Set up or restore.


def prepare(cfg: Config, run_dir: Path, resume: bool) -> tuple[Context, State]:
    """Load every input and check every length before any work; only then does the run directory appear.
    A resume reads back its completed generations and starts from its newest model."""
    accelerator = _accelerator(cfg, run_dir, resume)
    start = rundir.completed(run_dir, cfg.run.generations) if resume else 0
    prefix = sharing.check_prefix(cfg, run_dir)  # generations 0..run.prefix_until come from another run
    if prefix is not None:
        start = cfg.run.prefix_until + 1
    text = load_corpus(cfg.data, cfg.run.seed)
    pretraining_text = pretrain.text(cfg)
    # A pretrained base's tokenizer is made on its pretraining text, as a hub model's is.
    tokenizer = run_tokenizer(cfg, (pretraining_text or text).train, accelerator,
                              _saved_tokenizer(cfg, run_dir, resume))
    corpus = tokenize_corpus(text, tokenizer, cfg.data)
    human, fresh = mixing.human_sets(cfg, corpus)
    pretraining = pretrain.corpus(pretraining_text, tokenizer, cfg)
    model = start_model(cfg, tokenizer, run_dir, prefix, start).to(accelerator.device)
    check_context(cfg, model)
    es = evaluation.eval_set(cfg, text, corpus, tokenizer, model.get_input_embeddings().num_embeddings)
    ctx = Context(cfg, run_dir, accelerator, tokenizer, corpus, human, fresh, pretraining, es,
                  es.gt.lang if es.gt is not None else None)
    on_main(accelerator, _open_run_dir, cfg, run_dir, resume, tokenizer, accelerator, prefix)
    if cfg.run.log_with != "none":
        accelerator.init_trackers("testbed", config={k: v for k, v in config.flatten(cfg.to_dict()).items()
                                                      if isinstance(v, (int, float, str, bool))})
    return ctx, restore(ctx, model, start)


def _accelerator(cfg: Config, run_dir: Path, resume: bool) -> Accelerator:
    """This process's Accelerator, and the run's thread count (saved with the config: a resume uses the same).
    accelerate's own mixed precision would patch the trained model's forward only; one explicit autocast
    context covers every forward of the run instead. train.batch_size is one step's batch over all processes
    (split_batches), so the effective batch does not depend on the process count."""
    accelerator = Accelerator(mixed_precision="no", gradient_accumulation_steps=cfg.train.grad_accum,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              log_with=None if cfg.run.log_with == "none" else cfg.run.log_with,
                              project_dir=str(run_dir))
    check_batch_split(cfg.train.batch_size, accelerator.num_processes)
    batching.reset()  # what fit another run in this process says nothing about this one
    cfg.run.threads = rundir.run_threads(cfg, run_dir, resume)
    if accelerator.device.type == "cpu":
        cfg.run.threads = reproducible_cpu(cfg.run.threads, cfg.run.portable_numerics)
    if not accelerator.is_main_process:
        os.environ["TQDM_DISABLE"] = "1"
    return accelerator


def _saved_tokenizer(cfg: Config, run_dir: Path, resume: bool) -> Path | None:
    """The run's own saved tokenizer (a resume), or that of the run its first generations come from."""
    saved = run_dir / "tokenizer" if resume else Path(cfg.run.prefix_from) / "tokenizer" if cfg.run.prefix_from \
        else None
    return saved if saved is not None and saved.is_dir() else None


def _open_run_dir(cfg: Config, run_dir: Path, resume: bool, tokenizer, accelerator: Accelerator,
                  prefix: Path | None) -> None:
    """A new run's directory with its config and tokenizer; a resumed one cleaned of half-done writes, its
    config updated when the resume changes it (--allow-config-change); the generations it takes from
    `prefix` (run.prefix_from) linked in. env.json records every start."""
    def first_files(d: Path) -> None:
        (d / "config.yaml").write_text(config.to_yaml(cfg), encoding="utf-8")
        tokenizer.save_pretrained(d / "tokenizer")

    if not resume:
        rundir.create(run_dir, first_files)
    elif config.changes(config.from_dict(config.read_yaml(run_dir / "config.yaml")), cfg):
        rundir.write_text(run_dir / "config.yaml", config.to_yaml(cfg))
    print(f"run directory: {run_dir}", flush=True)  # only now that it exists: the inputs all loaded
    rundir.remove_partial_writes(run_dir)
    if prefix is not None:
        rundir.take_generations(prefix, run_dir, cfg.run.prefix_until)
    numerics.write_environment(run_dir, accelerator, cfg.run.portable_numerics)


def restore(ctx: Context, model, start: int) -> State:
    """The state generation `start` begins from: completed generations read back (their rows and curated
    synthetic sets), generation 0's model, and the detector's view of the human text, decided once (oracle
    flags are seeded by the run)."""
    cfg, run_dir, seed = ctx.cfg, ctx.run_dir, ctx.cfg.run.seed
    if start > 0:
        tqdm.write(f"resuming {run_dir} at generation {start} ({start} complete)")
    device = ctx.accelerator.device
    state = State(model, start, gen0=saved_model(run_dir, 0).to(device).eval() if start > 0 else None,
                  rows=rundir.read_rows(run_dir, start),
                  synthetic=[mixing.load_synthetic(rundir.gen_dir(run_dir, g) / "synthetic") for g in range(1, start)],
                  dedup=curate.RunDeduplication(cfg, run_dir))
    state.steps = sum(r["train_steps"] for r in state.rows)
    curate.detect(ctx.human, cfg, model.config, device, seeding.rng(seed, seeding.DETECT, 0))
    curate.detect(ctx.fresh, cfg, model.config, device, seeding.rng(seed, seeding.DETECT, 1))
    return state


# ---------------------------------------------------------------------------------------------
# The generations.


def pretrain_base(ctx: Context, state: State) -> None:
    """The pretrained base (pretrain): the model trains on the pretraining corpus and is saved as base/."""
    result = pretrain.pretrain(state.model, ctx.pretraining, ctx.cfg, ctx.tokenizer, ctx.accelerator, ctx.run_dir,
                               log=lambda values, step: ctx.log({f"pretrain/{k}": v for k, v in values.items()}, step))
    tqdm.write(f"pretrained base: {result.steps} steps, held-out loss {result.val_loss:.3f}, {result.seconds:.1f}s")


def generation_zero(ctx: Context, state: State) -> None:
    """The base model's zero-shot score, then training on human text."""
    model = state.model
    rundir.gen_dir(ctx.run_dir, 0).mkdir(exist_ok=True)
    zero_shot = on_main(ctx.accelerator, evaluation.zero_shot, model, ctx.cfg, ctx.es)
    seconds: dict[str, float] = {}
    with timed(seconds, "train"):
        result = _train(ctx, state, ctx.human, 0)
    state.steps += result.steps
    state.gen0 = copy.deepcopy(model).eval()
    # zero_shot: None on the processes other than the main one, which alone evaluates and saves
    facts = {**(zero_shot or {}), **summarize(np.zeros(0), "synthetic_ppl_gen0"), **result.record(),
             "train_composition": ctx.human.composition(), "synthetic_mean_length": None}
    on_main(ctx.accelerator, evaluate_and_save, ctx, state, 0, facts, seconds, result)


def generation(ctx: Context, state: State, g: int) -> None:
    """Generation g >= 1: model g-1 writes a synthetic set, curation filters it, mixing and screening make
    the training set, model g trains on it from train.init's weights, then it is evaluated and saved."""
    cfg, acc, seed = ctx.cfg, ctx.accelerator, ctx.cfg.run.seed
    out = rundir.gen_dir(ctx.run_dir, g)
    out.mkdir(exist_ok=True)
    seconds: dict[str, float] = {}
    with timed(seconds, "generate"):
        synth, texts = generate.synthesize(state.model, cfg, ctx.corpus.train, ctx.tokenizer, acc, g,
                                           seeding.seed_for(seed, g, seeding.GENERATE))
    with timed(seconds, "score"):
        ppl_gen0 = curate.score_under_gen0(state.gen0, synth, cfg, acc)
        curate.detect(synth, cfg, state.model.config, acc.device, seeding.rng(seed, seeding.DETECT, g + 1))

    with timed(seconds, "curate_mix"):
        dropped_by = curate.filter_synthetic(cfg, texts, ppl_gen0, state.dedup.of_generation(g), ctx.lang,
                                             state.ppl_ceiling)
        state.synthetic.append(synth.take(dropped_by == curate.KEPT))
        on_main(acc, mixing.save_synthetic, out / "synthetic", synth, texts,  # every example, with its decisions
                {"ppl_gen0": ppl_gen0, "z_score": synth.z, "flagged": synth.flagged, "dropped_by": dropped_by})
        pool = mixing.mix(cfg.mixing, ctx.human, state.synthetic, g, seed, fresh=ctx.fresh, total=len(synth),
                          pretraining=ctx.pretraining.train if ctx.pretraining is not None else None)
        train_set = curate.screen(pool, cfg.curate, seeding.rng(seed, seeding.DETECT, g, 2))

    if state.init is not None:
        state.model.load_state_dict(state.init)
    with timed(seconds, "train"):  # as in generation 0: the whole stage, setup and validation included
        result = _train(ctx, state, train_set, g)
    state.steps += result.steps
    facts = {**summarize(ppl_gen0, "synthetic_ppl_gen0"), **result.record(),
             "train_composition": train_set.composition(), "synthetic_mean_length": float(synth.lengths.mean()),
             **curate.curation_row(dropped_by, synth, ctx.human, pool, cfg.curate.detector != "none")}
    on_main(acc, evaluate_and_save, ctx, state, g, facts, seconds, result)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train(ctx: Context, state: State, train_set: Examples, g: int) -> train.TrainResult:
    steps = state.steps
    return train.train_generation(state.model, train_set, ctx.corpus.valid, ctx.cfg, ctx.accelerator, g,
                                  seeding.seed_for(ctx.cfg.run.seed, g, seeding.TRAIN), ctx.tokenizer.eos_token_id,
                                  log=lambda values, step: ctx.log(values, steps + step))


def evaluate_and_save(ctx: Context, state: State, g: int, facts: dict, seconds: dict[str, float],
                      result: train.TrainResult) -> None:
    """On the main process: evaluate model g and save the generation (its row: metrics, then `facts`)."""
    cfg = ctx.cfg
    with timed(seconds, "evaluate"):
        row, records = evaluation.evaluate_generation(state.model, state.gen0, cfg, ctx.es, ctx.tokenizer,
                                                      seeding.seed_for(cfg.run.seed, seeding.EVAL), noise=g == 0)
    row = rundir.finite({"generation": g, **row, **facts})
    row0 = state.rows[0] if state.rows else row
    row["phase"] = phases.phase(row, row0, phases.row_band(row0))
    timing = {"seconds": seconds, "train_tokens_per_s": result.tokens / max(result.seconds, 1e-9),
              "train_validation_s": result.val_seconds,  # of seconds["train"]
              "batch_sizes": batching.used()}  # configured batch -> the batch that fit, per stage
    rundir.save_generation(ctx.run_dir, g, state.model, ctx.tokenizer, row, records, timing, state.rows,
                           cfg.run.keep_checkpoints)
    ctx.log({f"generation/{k}": v for k, v in row.items()}, g)
    shown = [f"{m.key} {m.fmt.format(row[m.key])}" for m in registry.shown_in(registry.PROGRESS)
             if row.get(m.key) is not None]
    tqdm.write(f"gen {g}/{cfg.run.generations}: " + "  ".join(shown + [f"{k} {v:.1f}s" for k, v in seconds.items()]))


def human_baseline(ctx: Context, state: State) -> dict:
    """The human baseline, computed once per run (on the main process), and the perplexity filter's ceiling
    from it."""
    on_main(ctx.accelerator, evaluation.save_human_baseline, ctx.run_dir, state.gen0, ctx.cfg, ctx.es, ctx.tokenizer)
    baseline = evaluation.saved_human_baseline(ctx.run_dir)
    state.ppl_ceiling = curate.perplexity_ceiling(baseline)
    return baseline


def finish(ctx: Context) -> None:
    """After the last generation: drop the newest checkpoint under run.keep_checkpoints=none; close trackers."""
    cfg = ctx.cfg
    if cfg.run.keep_checkpoints == "none":
        on_main(ctx.accelerator, rundir.prune_checkpoints, ctx.run_dir, cfg.run.generations + 1, "none")
    if cfg.run.log_with != "none":
        ctx.accelerator.end_training()
