"""The pretrained base: a model trained from scratch on a broad corpus before generation 0 (the `pretrain`
section), so that generation 0 fine-tunes a model that knows more than its fine-tuning data, as OPT-125m knows
more than WikiText-2. Collapse can then erase knowledge that the fine-tuning domain's human data cannot give
back, which a from-scratch generation 0 never had.

The base is the run's "generation -1" (rundir.BASE): its folder base/ holds the checkpoint (safetensors) and
pretrain.json, and a COMPLETE marker written last. A run killed while pretraining trains the base again from
its start on resume (every draw is seeded, so it is the same base). Runs of a sweep that agree on what decides
the base (sharing.prefix_values(cfg, BASE)) take it from one run, as shared prefixes take generations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from testbed import language, rundir, seeding, train
from testbed.config import Config, LoraConfig, TrainConfig
from testbed.data import DataError, file_lines, tokenize_text
from testbed.distributed import on_main
from testbed.mixing import Examples, human_examples

HELD_OUT = 20  # one line in this many of the pretraining text is held out for the base's validation loss


@dataclass
class Text:
    """The pretraining text: training lines and held-out lines."""

    train: list[str]
    held_out: list[str]


@dataclass
class Corpus:
    """The pretraining text as blocks: what the base trains on (and what mixing.human_pool=pretrain draws)."""

    train: Examples
    held_out: np.ndarray


def text(cfg: Config) -> Text | None:
    """The pretraining text: `pretrain.sentences` sentences of the built-in language's mixture of all domains
    (language.pretraining_lines), or pretrain.path's train.txt; every HELD_OUT-th line is held out. None without
    a pretrained base (pretrain.source=none)."""
    p = cfg.pretrain
    if p.source == "none":
        return None
    if p.source == "builtin":
        lines = language.pretraining_lines(cfg.data.language, p.sentences, p.seed)
    else:
        lines = file_lines(Path(p.path) / "train.txt", cfg.data.preprocessing)  # type: ignore[arg-type]
    if len(lines) < 2:
        raise DataError(f"the pretraining text has {len(lines)} line(s): at least 2 are needed (one is held out)")
    held = np.zeros(len(lines), dtype=bool)
    held[HELD_OUT - 1 :: HELD_OUT] = True
    held[-1] = held[-1] or not held.any()
    return Text([x for x, h in zip(lines, held) if not h], [x for x, h in zip(lines, held) if h])


def corpus(t: Text | None, tokenizer, cfg: Config) -> Corpus | None:
    """The pretraining text tokenized and cut into data.block_size blocks (at most pretrain.max_blocks); None
    without one."""
    if t is None:
        return None
    _, blocks = tokenize_text(t.train, tokenizer, cfg.data, "the pretraining text")
    _, held_out = tokenize_text(t.held_out, tokenizer, cfg.data, "the pretraining text's held-out lines",
                                keep_partial=True)
    return Corpus(human_examples(blocks[: cfg.pretrain.max_blocks]), held_out)


def settings(cfg: Config) -> TrainConfig:
    """What pretraining trains under: train's optimizer and precision with pretrain's epochs and learning rate,
    every weight trained (no LoRA) and the last weights kept (no best-checkpoint selection)."""
    p = cfg.pretrain
    return dataclasses.replace(cfg.train, epochs=p.epochs, gen0_epochs=None, lr=p.lr,
                               min_lr=min(cfg.train.min_lr, p.lr), select_best=False, eval_every=0,
                               lora=LoraConfig(enabled=False))


def pretrain(model, c: Corpus, cfg: Config, tokenizer, accelerator: Accelerator, run_dir: Path,
             log=None) -> train.TrainResult:
    """Train the base in place on the pretraining corpus and save it as the run's base/ (main process)."""
    t = settings(cfg)
    result = train.train(model, c.train, c.held_out, t, cfg.data.block_size, accelerator,
                         seeding.seed_for(cfg.pretrain.seed, seeding.PRETRAIN), t.epochs, desc="pretrain", log=log)
    record = {"blocks": len(c.train), "held_out_blocks": len(c.held_out), "epochs": t.epochs,
              "train_loss": result.train_loss, "held_out_loss": result.val_loss, "steps": result.steps,
              "tokens": result.tokens, "seconds": result.seconds}
    on_main(accelerator, save, run_dir, model, tokenizer, record)
    return result


def save(run_dir: Path, model, tokenizer, record: dict) -> None:
    """The base's checkpoint and pretrain.json, then its COMPLETE marker."""
    out = rundir.gen_dir(run_dir, rundir.BASE)
    out.mkdir(exist_ok=True)
    rundir.save_pretrained(out / "model", model, tokenizer)
    rundir.write_json(out / "pretrain.json", rundir.finite(record))
    rundir.mark_complete(run_dir, rundir.BASE)
