"""The run directory: naming, atomic writes, per-generation artefacts and completion markers.

Every file is written to a temporary name and renamed into place, so a kill or a full disk leaves
either the old file or the new one, never half of one. A generation counts as done only once its
COMPLETE marker exists, which is written after all of its artefacts.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import Config, read_yaml

COMPLETE = "COMPLETE"
BASE = -1  # the pretrained base's generation: it comes before generation 0 (its folder: gen_dir)


class RunDirError(ValueError):
    """A user error about the run directory: one line naming the path and what to do."""


def default_name(config_path: str | None) -> str:
    stem = Path(config_path).stem if config_path else "default"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_path(out_dir: str, name: str) -> Path:
    """out_dir/name, refusing names that would leave out_dir."""
    root = Path(out_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise RunDirError(f"run.name {name!r} would place the run outside run.out_dir {out_dir}")
    return path


def refuse_existing(path: Path) -> None:
    if path.exists():
        raise RunDirError(f"run directory {path} already exists: pass --resume to continue it, "
                          "or choose another run.name")


def create(path: Path, fill: Callable[[Path], None]) -> None:
    """Make a new run directory holding the first files `fill` writes (see `write_dir`). Never reuses one."""
    refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dir(path, fill, replace=False)


def write_dir(path: Path, fill: Callable[[Path], None], replace: bool = True) -> None:
    """Write a directory atomically: `fill` writes its contents into a temporary folder, which then takes the
    place of `path`. An old `path` is moved aside first and deleted only once the new one is in place; a
    kill between the two renames leaves it aside, and `remove_partial_writes` moves it back. With
    `replace` false an existing `path` is an error (the rename refuses it)."""
    tmp, old = _tmp(path), _aside(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        fill(tmp)
        if replace and path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old-{os.getpid()}")


def write_text(path: Path, text: str) -> None:
    """Write atomically: a temporary file, flushed to disk, then renamed over `path`."""
    tmp = _tmp(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_default, allow_nan=True)


def finite(row: dict) -> dict:
    """NaN/inf become null, so a row is strict JSON."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, default=_default, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def save_pretrained(path: Path, *objects) -> None:
    """save_pretrained each object (model: safetensors; tokenizer) into `path`, atomically (`write_dir`)."""
    write_dir(path, lambda tmp: [obj.save_pretrained(tmp) for obj in objects])


def remove_partial_writes(run: Path) -> None:
    """Undo what a write killed half-way left: delete temporary files and folders, and move a folder that
    `write_dir` had set aside back into place when its new version never arrived."""
    for tmp in run.rglob(".*.tmp-*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    for old in run.rglob(".*.old-*"):
        target = old.with_name(old.name[1:].rsplit(".old-", 1)[0])
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, target)


def gen_dir(run: Path, generation: int) -> Path:
    """A generation's folder, gen_NNN; the pretrained base's (generation BASE), base."""
    return run / "base" if generation == BASE else run / f"gen_{generation:03d}"


def is_complete(run: Path, generation: int) -> bool:
    return (gen_dir(run, generation) / COMPLETE).is_file()


def mark_complete(run: Path, generation: int) -> None:
    write_text(gen_dir(run, generation) / COMPLETE, "")


def completed(run: Path, generations: int) -> int:
    """Number of leading generations (0, 1, ...) that are complete."""
    g = 0
    while g <= generations and is_complete(run, g):
        g += 1
    return g


def check_resumable(run: Path, generations: int) -> None:
    """Refuse to continue a run whose next generation needs a checkpoint that run.keep_checkpoints removed."""
    start = completed(run, generations)
    newest = gen_dir(run, start - 1) / "model"
    if 0 < start <= generations and not newest.is_dir():
        raise RunDirError(f"cannot continue {run} at generation {start}: it starts from {newest}, which "
                          f"run.keep_checkpoints removed; run it anew with run.generations={generations} "
                          "(run.keep_checkpoints=last keeps the newest model, to extend a run later)")


def prune_checkpoints(run: Path, generation: int, keep: str) -> None:
    """Apply run.keep_checkpoints after `generation` is complete; gen_000 always stays (it scores data).

    last: gen_000 and the newest. none: gen_000 only, once the run is over (the newest stays until then,
    so a killed run can resume).
    """
    if keep == "all":
        return
    for g in range(1, generation):
        shutil.rmtree(gen_dir(run, g) / "model", ignore_errors=True)


def read_rows(run: Path, generations: int) -> list[dict[str, Any]]:
    """The metrics rows of the first `generations` generations, as each generation saved its own."""
    return [json.loads((gen_dir(run, g) / "metrics.json").read_text()) for g in range(generations)]


def save_generation(run: Path, generation: int, model, tokenizer, row: dict, records: list[dict],
                    timing: dict, rows: list[dict], keep_checkpoints: str) -> None:
    """A generation's checkpoint, per-sample records and metrics (appended to `rows` and metrics.jsonl), then
    its COMPLETE marker. Wall times (`timing`) go beside the metrics, not in them, so a resumed run's
    metrics.jsonl equals an uninterrupted one's."""
    out = gen_dir(run, generation)
    save_pretrained(out / "model", model, tokenizer)
    write_jsonl(out / "samples.jsonl", [finite(r) for r in records])
    write_json(out / "metrics.json", row)
    write_json(out / "timing.json", timing)
    rows.append(row)
    write_jsonl(run / "metrics.jsonl", rows)
    mark_complete(run, generation)
    prune_checkpoints(run, generation, keep_checkpoints)


def run_threads(cfg: Config, run: Path, resume: bool) -> int | None:
    """The CPU thread count a run computes with: run.threads, else the count saved with the run (a resume)
    or with the run whose first generations it takes (run.prefix_from). Sums split over other counts differ in the
    last digits, so a resumed or shared generation is only redone exactly with the same count."""
    if cfg.run.threads is not None:
        return cfg.run.threads
    source = run if resume else Path(cfg.run.prefix_from) if cfg.run.prefix_from else None
    if source is None or not (source / "config.yaml").is_file():
        return None
    return (read_yaml(source / "config.yaml").get("run") or {}).get("threads")


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (files here are never changed in place: every write renames a new file over the old),
    or a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def has_prefix(run: Path, until: int) -> bool:
    """Whether the run holds generations 0..until complete (until = BASE: its pretrained base)."""
    return is_complete(run, BASE) if until == BASE else completed(run, until) > until


def take_generations(source: Path, run: Path, until: int) -> None:
    """Generations 0..until of run `source` become this run's, its pretrained base first if it has one (until =
    BASE: the base alone): each folder not complete here yet is linked (or copied) in whole, atomically,
    COMPLETE marker included, with source.json naming where it came from; then the human baseline files and
    metrics.jsonl, so the run reads as one that computed them."""
    taken = False
    for g in range(BASE if is_complete(source, BASE) else 0, until + 1):
        if is_complete(run, g):
            continue

        def fill(tmp: Path, g: int = g) -> None:
            shutil.copytree(gen_dir(source, g), tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
            write_json(tmp / "source.json", {"prefix_from": str(source.resolve())})

        write_dir(gen_dir(run, g), fill)  # replaces a half-written generation of this run
        taken = True
    for name in ("human_samples.jsonl", "human_baseline.json"):  # the baseline last, as the loop writes them
        if until >= 0 and (source / name).is_file() and not (run / name).is_file():
            _link_or_copy(str(source / name), str(_tmp(run / name)))
            os.replace(_tmp(run / name), run / name)
    if taken and until >= 0:
        write_jsonl(run / "metrics.jsonl", read_rows(run, completed(run, until)))
