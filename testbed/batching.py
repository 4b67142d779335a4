"""Batches that fit: a stage whose batch runs out of device memory halves it and retries, and the size that
fit is kept for the rest of the run (and recorded in each generation's timing.json).

Like accelerate's `find_executable_batch_size`, but a failed batch is redone in pieces rather than the whole
call restarted, so work already done is kept and results do not depend on where memory ran out: the callers
(scoring, generation) compute every row on its own, and generation draws its random numbers per configured
batch, not per piece (testbed/generate.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size

# (stage, configured batch) -> the largest batch known to fit, for this process. A run uses few of them:
# generation.batch_size and eval.batch_size for generation, eval/train batch sizes for scoring.
_fitted: dict[tuple[str, int], int] = {}


def fitted(stage: str, batch_size: int) -> int:
    """The batch `stage` runs at when configured with `batch_size`: smaller once it ran out of memory."""
    return _fitted.get((stage, batch_size), batch_size)


def used() -> dict[str, dict[str, int]]:
    """Every stage's configured batch -> the batch it runs at, e.g. {"generate": {"256": 128}}."""
    out: dict[str, dict[str, int]] = {}
    for (stage, configured), size in sorted(_fitted.items()):
        out.setdefault(stage, {})[str(configured)] = size
    return out


def reset() -> None:
    """Forget what fit (a new run, or a test)."""
    _fitted.clear()


def run_fitting(stage: str, batch_size: int, start: int, stop: int, fn: Callable[[int, int], None]) -> None:
    """fn(a, b) over rows [start, stop) in pieces of at most `stage`'s fitted batch; a piece that runs out of
    device memory is halved and redone (down to one row, then the error stands)."""
    key = (stage, batch_size)
    _fitted.setdefault(key, batch_size)
    a = start
    while a < stop:
        size = _fitted[key]
        b = min(a + size, stop)
        try:
            fn(a, b)
        except Exception as exc:
            if not (isinstance(exc, torch.OutOfMemoryError) or should_reduce_batch_size(exc)) or size == 1:
                raise
            clear_device_cache(garbage_collection=True)
            _fitted[key] = size // 2
            continue
        a = b
