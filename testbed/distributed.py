"""What the processes of `accelerate launch` share: work done once on the main process, rows split into
per-process shares, and a check that training left every process with the same weights.

With one process each function is a plain call: no collective, nothing copied, the same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from testbed.config import ConfigError

T = TypeVar("T")


def check_batch_split(batch_size: int, processes: int) -> None:
    """train.batch_size is one step's batch over all processes, each taking an equal share of it."""
    if batch_size % processes:
        raise ConfigError(f"config key 'train.batch_size': {batch_size} does not split evenly over {processes} "
                          f"processes (each takes an equal share of the batch); use a multiple of {processes}")


def _portable(exc: Exception | None) -> Exception | None:
    """`exc` if it survives pickling (to reach the other processes), else a RuntimeError with its line."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def main_only(accelerator: Accelerator) -> Iterator[None]:
    """Around work that only the main process does (see `on_main`, which tests is_main_process): every process
    leaves the block together, and when the work failed on the main process, all of them raise its error.

    Without it the others would go on to their next collective and wait there for a process that has
    stopped: a full disk or an input only the main process reads would hang the run, not end it.
    """
    if accelerator.num_processes == 1:
        yield
        return
    error = None
    try:
        yield
    except Exception as exc:
        error = exc
    outcome = [_portable(error)]
    broadcast_object_list(outcome, from_process=0)
    if error is not None:  # the main process raises its own error, traceback included
        raise error
    if outcome[0] is not None:
        raise outcome[0]


def on_main(accelerator: Accelerator, fn: Callable[..., T], *args, **kwargs) -> T | None:
    """fn(*args, **kwargs) on the main process only (None on the others), inside `main_only`: the one way
    to do work on the main process."""
    result = None
    with main_only(accelerator):
        if accelerator.is_main_process:
            result = fn(*args, **kwargs)
    return result


def from_main(accelerator: Accelerator, fn: Callable[[], T]) -> T:
    """fn() computed once, on the main process, and its result given to every process."""
    result = on_main(accelerator, fn)
    if accelerator.num_processes > 1:
        box = [result]
        broadcast_object_list(box, from_process=0)
        result = box[0]
    return result  # type: ignore[return-value]


def map_rows(accelerator: Accelerator, fn: Callable[..., T], *arrays: np.ndarray) -> list[T]:
    """fn over this process's contiguous share of the rows of `arrays`; every process gets the result of
    every share, in process order. With one process: [fn(*arrays)]."""
    if accelerator.num_processes == 1:
        return [fn(*arrays)]
    share = np.array_split(np.arange(len(arrays[0])), accelerator.num_processes)[accelerator.process_index]
    return gather_object([fn(*(a[share] for a in arrays))])


def weight_digests(model: torch.nn.Module) -> dict[str, str]:
    """A digest of the bytes of every tensor in the model's state."""
    return {name: hashlib.blake2b(t.detach().reshape(-1).view(torch.uint8).cpu().numpy()).hexdigest()
            for name, t in model.state_dict().items()}


def differing(digests: list[dict[str, str]]) -> list[str]:
    """The tensor names whose digest is not the same in every process's `weight_digests`."""
    return [name for name, d in digests[0].items() if any(other.get(name) != d for other in digests[1:])]


def check_same_weights(model: torch.nn.Module, accelerator: Accelerator) -> None:
    """Raise unless every process holds the same weights, bit for bit, tensor by tensor.

    Data-parallel steps and the shared choice of checkpoint keep them equal; a difference is a bug, and
    would make each process generate its share of the next synthetic set from another model.
    """
    if accelerator.num_processes == 1:
        return
    names = differing(gather_object([weight_digests(model)]))
    if names:
        raise RuntimeError(f"processes hold different weights after training, in {len(names)} tensors: "
                           + ", ".join(names[:5]))
