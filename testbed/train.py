"""One generation's training: an explicit accelerate loop with AdamW, a schedule and best-on-validation;
optionally a fresh LoRA adapter (peft) merged into the weights at the end, and gradient checkpointing."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from testbed.config import Config, LoraConfig, TrainConfig
from testbed.data import to_blocks
from testbed.distributed import check_same_weights, from_main, map_rows
from testbed.metrics.perplexity import sequence_nll
from testbed.mixing import SYNTHETIC, Examples
from testbed.model import autocast


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    train_loss: float  # mean loss over the last epoch
    val_loss: float  # validation NLL of the kept checkpoint
    best_epoch: float  # epoch (fractional for mid-epoch evaluations) of the kept checkpoint
    val_seconds: float = 0.0  # of `seconds`, spent on validation (its cost scales with epochs, not data)

    def record(self) -> dict:
        """The training record of a metrics row."""
        return {"val_loss": self.val_loss, "train_loss": self.train_loss, "best_epoch": self.best_epoch,
                "train_steps": self.steps, "train_tokens": self.tokens}


NOT_TRAINED = TrainResult(steps=0, tokens=0, seconds=0.0, train_loss=math.nan, val_loss=math.nan, best_epoch=0.0)


def pack(examples: Examples, block_size: int, seed: int, separator: int | None = None) -> np.ndarray:
    """Shuffle examples, concatenate their tokens and cut the stream into full blocks: no padding.

    With a `separator` token id, synthetic examples that do not end with it get it appended, so two
    unrelated continuations are not read as one text.
    """
    order = np.random.default_rng(seed).permutation(len(examples))
    ids, lengths = examples.ids[order], examples.lengths[order]
    if separator is not None:
        last = ids[np.arange(len(ids)), np.maximum(lengths - 1, 0)]
        add = (examples.source[order] == SYNTHETIC) & (last != separator) & (lengths > 0)
        ids = np.concatenate([ids, np.full((len(ids), 1), separator, dtype=ids.dtype)], axis=1)
        ids[np.flatnonzero(add), lengths[add]] = separator
        lengths = lengths + add
    stream = ids[np.arange(ids.shape[1])[None, :] < lengths[:, None]]
    return to_blocks(stream, block_size, "the training set")


def lr_factor(step: int, total: int, cfg: TrainConfig, steps_per_epoch: int = 1) -> float:
    """Multiplier of cfg.lr at optimizer step `step` of `total`: linear warmup, then cosine/linear decay or
    constant. With schedule_interval=epoch the decay is held within an epoch and advances per epoch, like
    torch's CosineAnnealingLR(T_max=epochs, eta_min=min_lr) stepped once an epoch."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule_interval == "epoch":
        progress = (step // steps_per_epoch) / max(1, total // steps_per_epoch)
    else:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    floor = cfg.min_lr / cfg.lr
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return floor + (1 - floor) * shape


def _optimizer(model, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.weight_decay_all:  # torch's AdamW default, the paper's code
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    else:  # the usual GPT recipe: decay matrices only, leave biases and norms alone
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


def validation_loss(model, blocks: np.ndarray, batch_size: int, accelerator: Accelerator) -> float:
    """Mean NLL per token of `blocks`, each process scoring a share; the main process's sum of all the
    shares is every process's value, so all of them keep the same checkpoint."""
    parts = map_rows(accelerator, partial(sequence_nll, model, batch_size=batch_size), blocks)
    nll, count = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return from_main(accelerator, lambda: float(nll.sum() / max(count.sum(), 1)))


def attach_lora(model, cfg: LoraConfig, seed: int):
    """`model` with a fresh low-rank adapter (peft), its own weights frozen; the adapter's init is seeded
    alike in every process. Target modules: cfg.target_modules, or peft's default for the architecture."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(seed)
    peft_config = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                 target_modules=cfg.target_modules, task_type="CAUSAL_LM",
                                 fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2's Conv1D: (in, out)
    return get_peft_model(model, peft_config)


def _trained_state(model) -> dict[str, torch.Tensor]:
    """The entries of the state training changes: all of it, less the parameters it leaves frozen (LoRA's
    base weights), so keeping a best checkpoint costs the adapter's size, not the model's."""
    frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


LOG_EVERY = 25  # optimizer steps between progress-bar updates: reading the loss waits for the device


@dataclass
class Steps:
    """What one generation's optimizer steps use, built by `setup`. `trained` runs the steps (DDP-wrapped
    and/or compiled); `model` stays the plain module, which validation, the kept state and the caller use."""

    trained: torch.nn.Module
    model: torch.nn.Module
    loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    total: int  # optimizer steps in all epochs


def setup(model, examples: Examples, cfg: TrainConfig, block_size: int, accelerator: Accelerator, seed: int,
          epochs: int, separator: int | None) -> Steps:
    """Blocks, a seeded shuffling loader, AdamW, the learning-rate schedule and (fp16) the loss scaler,
    prepared by accelerate."""
    # Dropout draws from the global generator: seeded, so a resumed run matches, and per process, so
    # data-parallel processes do not drop the same units.
    torch.manual_seed(seed + accelerator.process_index)
    blocks = torch.as_tensor(pack(examples, block_size, seed, separator))
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(blocks, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                                         drop_last=False)
    optimizer = _optimizer(model, cfg, accelerator.device)
    trained, optimizer, loader = accelerator.prepare(torch.compile(model) if cfg.compile else model, optimizer,
                                                     loader)
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total = steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg, steps_per_epoch))
    # fp16 gradients underflow without loss scaling; a disabled scaler is a no-op.
    scaler = torch.amp.GradScaler(accelerator.device.type, enabled=cfg.precision == "fp16")
    return Steps(trained, accelerator.unwrap_model(trained, keep_torch_compile=False), loader, optimizer, scheduler,
                 scaler, steps_per_epoch, total)


def micro_step(s: Steps, batch: torch.Tensor, cfg: TrainConfig, accelerator: Accelerator) -> torch.Tensor:
    """Forward and backward of one micro-batch; after grad_accum of them (accelerator.sync_gradients), the
    clipped, scaled optimizer step. Returns the loss, on the device."""
    with accelerator.accumulate(s.trained):
        with autocast(cfg.precision, accelerator.device):
            loss = s.trained(input_ids=batch, labels=batch).loss
        accelerator.backward(s.scaler.scale(loss))
        if accelerator.sync_gradients:
            s.scaler.unscale_(s.optimizer)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(s.trained.parameters(), cfg.max_grad_norm)
            s.scaler.step(s.optimizer)
            s.scaler.update()
            s.optimizer.zero_grad(set_to_none=True)
    return loss


@dataclass
class BestOnValidation:
    """Validation of the plain model at each evaluation, and a copy of the best trained state (with
    select_best) that later steps cannot change, in CPU buffers reused at every improvement (pinned on a
    GPU, so the copy does not block the device)."""

    model: torch.nn.Module
    valid_blocks: np.ndarray
    cfg: TrainConfig
    accelerator: Accelerator
    log: Callable[[dict[str, float], int], None] | None
    loss: float = math.inf
    epoch: float = 0.0
    state: dict[str, torch.Tensor] | None = None
    seconds: float = 0.0  # spent validating (its cost scales with epochs, not data)

    def evaluate(self, epoch: float, step: int, last: bool) -> None:
        # Outside the DDP wrapper: the processes' weights are equal, each scores a share of the blocks.
        start = time.perf_counter()
        with autocast(self.cfg.precision, self.accelerator.device):
            loss = validation_loss(self.model, self.valid_blocks, self.cfg.batch_size, self.accelerator)
        self.seconds += time.perf_counter() - start  # the loss is a float: synchronized
        if self.log is not None:
            self.log({"train/val_loss": loss}, step)
        if self.cfg.select_best and loss >= self.loss:
            return
        self.loss, self.epoch = loss, epoch
        if not self.cfg.select_best or last:  # at the last evaluation the model holds these weights already
            self.state = None
            return
        state = _trained_state(self.model)
        if self.state is None:
            self.state = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=v.is_cuda) for k, v in state.items()}
        for k, v in state.items():
            self.state[k].copy_(v.detach(), non_blocking=True)

    def restore(self) -> None:
        """End on the best weights (the trained entries; the frozen ones never changed)."""
        if self.state is None:
            return
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize()  # the last non-blocking copy has landed
        self.model.load_state_dict(self.state, strict=False)


def train(model, examples: Examples, valid_blocks: np.ndarray, cfg: TrainConfig, block_size: int,
          accelerator: Accelerator, seed: int, epochs: int, desc: str = "train",
          separator: int | None = None, log: Callable[[dict[str, float], int], None] | None = None) -> TrainResult:
    """Train `model` (fp32 weights) in place on `examples` for `epochs`, forwards under cfg.precision's
    autocast; with select_best, end on the weights best on validation (evaluated at every epoch end, and
    every `eval_every` steps). `separator`: see `pack` (train.eos_between_examples). `log` receives the
    training loss and learning rate every LOG_EVERY steps, and the validation loss at each evaluation,
    with the step."""
    # train.lora: a fresh adapter on the weights the model holds, merged into them at the end: `model`
    # ends as a plain model again. `base` is that plain model throughout.
    base = attached = model
    if cfg.lora.enabled:
        attached = attach_lora(model, cfg.lora, seed)
    if cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    s = setup(attached, examples, cfg, block_size, accelerator, seed, epochs, separator)
    best = BestOnValidation(s.model, valid_blocks, cfg, accelerator, log)
    step, tokens, t0 = 0, 0, time.perf_counter()
    s.trained.train()
    bar = tqdm(total=s.total, desc=desc, unit="step", leave=False)
    for epoch in range(epochs):
        epoch_loss = torch.zeros((), device=accelerator.device)  # summed on the device: no host sync per step
        epoch_batches = 0
        for batch in s.loader:
            loss = micro_step(s, batch, cfg, accelerator)
            epoch_loss += loss.detach()
            epoch_batches += 1
            tokens += batch.numel()
            if not accelerator.sync_gradients:  # an optimizer step is done after grad_accum micro-batches
                continue
            s.scheduler.step()
            step += 1
            if step % LOG_EVERY == 0 or step == s.total:
                values = {"train/loss": loss.item(), "train/lr": s.scheduler.get_last_lr()[0]}
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{values['train/loss']:.3f}", lr=f"{values['train/lr']:.2e}")
                if log is not None:
                    log(values, step)
            if cfg.eval_every and step % cfg.eval_every == 0 and step % s.steps_per_epoch:
                best.evaluate(step / s.steps_per_epoch, step, last=False)
                s.trained.train()
        best.evaluate(epoch + 1.0, step, last=epoch == epochs - 1)
        s.trained.train()
    bar.close()
    best.restore()
    if cfg.gradient_checkpointing:
        base.gradient_checkpointing_disable()
    if cfg.lora.enabled:
        s.model.merge_and_unload()  # into `base`'s weights, in place
    check_same_weights(base.eval(), accelerator)
    seconds = time.perf_counter() - t0
    accelerator.free_memory()  # drop accelerate's references so nothing outlives this generation
    # Each process trained on its share of every batch: tokens add up, losses average.
    tokens_and_losses = gather_object([(tokens, float(epoch_loss) / max(epoch_batches, 1))])
    return TrainResult(steps=step, tokens=sum(t for t, _ in tokens_and_losses), seconds=seconds,
                       train_loss=float(np.mean([loss for _, loss in tokens_and_losses])), val_loss=best.loss,
                       best_epoch=best.epoch, val_seconds=best.seconds)


# ---------------------------------------------------------------------------------------------
# The training stage of the loop.


def enough_to_train(train_set: Examples, block_size: int) -> bool:
    """At least one block of text, or the generation keeps the weights it starts from (and says so)."""
    if int(train_set.lengths.sum()) >= block_size:
        return True
    tqdm.write(f"warning: curation left {int(train_set.lengths.sum())} tokens, less than one block "
               f"(data.block_size={block_size}): this generation is not trained")
    return False


def train_generation(model, train_set: Examples, valid_blocks: np.ndarray, cfg: Config, accelerator: Accelerator,
                     generation: int, seed: int, eos: int,
                     log: Callable[[dict[str, float], int], None] | None = None) -> TrainResult:
    """The training stage: model g trains in place on its training set (generation 0 for train.gen0_epochs),
    ending on the checkpoint best on human validation; NOT_TRAINED when curation left less than a block."""
    t = cfg.train
    if not enough_to_train(train_set, cfg.data.block_size):
        return NOT_TRAINED
    epochs = t.gen0_epochs if generation == 0 and t.gen0_epochs else t.epochs
    return train(model, train_set, valid_blocks, t, cfg.data.block_size, accelerator, seed, epochs,
                 desc=f"gen {generation} train", separator=eos if t.eos_between_examples else None, log=log)


def weights(model) -> dict[str, torch.Tensor]:
    """A CPU copy of a model's weights: what every generation g >= 1 starts from under train.init base or gen0."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
