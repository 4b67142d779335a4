"""One generation's training: an explicit accelerate loop with AdamW, a schedule and best-on-validation."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from testbed.config import TrainConfig
from testbed.data import to_blocks
from testbed.metrics.perplexity import sequence_nll
from testbed.mixing import Examples


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    train_loss: float  # mean loss over the last epoch
    val_loss: float  # validation NLL of the kept checkpoint
    best_epoch: float  # epoch (fractional for mid-epoch evaluations) of the kept checkpoint


def pack(examples: Examples, block_size: int, seed: int) -> np.ndarray:
    """Shuffle examples, concatenate their tokens and cut the stream into full blocks: no padding."""
    order = np.random.default_rng(seed).permutation(len(examples))
    ids, lengths = examples.ids[order], examples.lengths[order]
    stream = ids[np.arange(ids.shape[1])[None, :] < lengths[:, None]]
    return to_blocks(stream, block_size, "the training set")


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at optimizer step `step`: linear warmup, then cosine/linear decay or constant."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    floor = cfg.min_lr / cfg.lr
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return floor + (1 - floor) * shape


def _optimizer(model, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # Decay matrices only; biases and norms are left alone (the usual GPT recipe).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


def validation_loss(model, blocks: np.ndarray, batch_size: int) -> float:
    nll, count = sequence_nll(model, blocks, batch_size=batch_size)
    return float(nll.sum() / max(count.sum(), 1))


def train(model, examples: Examples, valid_blocks: np.ndarray, cfg: TrainConfig, block_size: int,
          accelerator: Accelerator, seed: int, epochs: int, desc: str = "train") -> TrainResult:
    """Train `model` in place on `examples` for `epochs`; with select_best, end on the weights best on
    validation (evaluated at every epoch end, and every `eval_every` steps)."""
    torch.manual_seed(seed)  # dropout draws from the global generator: fix it, so a resumed run matches
    blocks = torch.as_tensor(pack(examples, block_size, seed))
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(blocks, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                                         drop_last=False)
    optimizer = _optimizer(model, cfg, accelerator.device)
    # `trained` runs the steps (DDP-wrapped and/or compiled); `model` stays the plain module, which
    # validation, the kept state and the caller use.
    trained, optimizer, loader = accelerator.prepare(torch.compile(model) if cfg.compile else model, optimizer,
                                                     loader)
    model = accelerator.unwrap_model(trained, keep_torch_compile=False)
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total = steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg))

    best_loss, best_state, best_epoch = math.inf, None, 0.0
    step, tokens, t0 = 0, 0, time.perf_counter()

    def evaluate_and_keep(epoch: float) -> None:
        nonlocal best_loss, best_state, best_epoch
        # Every process evaluates the same weights on the same blocks, outside the DDP wrapper.
        loss = validation_loss(model, valid_blocks, cfg.batch_size)
        if not cfg.select_best or loss < best_loss:
            best_loss, best_epoch = loss, epoch
            if cfg.select_best:  # a CPU copy, so later steps cannot change it
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    trained.train()
    bar = tqdm(total=total, desc=desc, unit="step", leave=False)
    for epoch in range(epochs):
        epoch_loss, epoch_batches = 0.0, 0
        for batch in loader:
            with accelerator.accumulate(trained):
                loss = trained(input_ids=batch, labels=batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trained.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.item()
            epoch_batches += 1
            tokens += batch.numel()
            if accelerator.sync_gradients:  # one optimizer step done (after grad_accum micro-batches)
                scheduler.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if cfg.eval_every and step % cfg.eval_every == 0 and step % steps_per_epoch:
                    evaluate_and_keep(step / steps_per_epoch)
                    trained.train()
        evaluate_and_keep(epoch + 1.0)
        trained.train()
    bar.close()
    seconds = time.perf_counter() - t0

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    accelerator.free_memory()  # drop accelerate's references so nothing outlives this generation
    return TrainResult(steps=step, tokens=tokens, seconds=seconds, train_loss=epoch_loss / max(epoch_batches, 1),
                       val_loss=best_loss, best_epoch=best_epoch)
