"""What several test files share: the tiny run's overrides, the repository, scripts loaded as programs, run
directories written by hand, the two-process launch. Nothing here imports torch (tests/helpers/models.py
holds what does), so conftest stays light for the tests that need none."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# A run small enough for seconds on a CPU: a 1-layer width-32 GPT-2 on a few hundred sentences.
TINY = [
    "run.generations=2", "data.block_size=16", "data.language.train_sentences=400",
    "data.language.valid_sentences=40", "data.language.test_sentences=60", "tokenizer.vocab_size=300",
    "model.layers=1", "model.width=32", "model.heads=2", "model.context=64", "generation.prompt_tokens=8",
    "generation.max_new_tokens=8", "train.gen0_epochs=2", "train.epochs=1", "train.batch_size=16",
    "eval.num_samples=8", "eval.prompt_tokens=4", "eval.max_new_tokens=8", "eval.tail_rank=20",
]
# Smaller still, where a check needs no more (a run takes seconds): 120 sentences, generations 0..2, one thread.
SMALL = [*TINY, "data.language.train_sentences=120", "data.language.valid_sentences=20",
         "data.language.test_sentences=30", "run.threads=1"]

# `--cpu` makes accelerate start a single process; the multi-process launcher with ACCELERATE_USE_CPU gives
# real data-parallel CPU processes (gloo).
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`accelerate launch` of ARGS (a script or -m module and its arguments) in two CPU processes, offline."""
    return subprocess.run([*LAUNCH, *args], env={**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"},
                          capture_output=True, text=True, timeout=timeout)


def load_script(name: str):
    """scripts/NAME.py as a module, the program under test (scripts are run, not imported by testbed). As when
    run, the script's directory is first on sys.path while it loads, for the sibling scripts it imports."""
    import importlib.util

    scripts = str(REPO / "scripts")
    spec = importlib.util.spec_from_file_location(name, Path(scripts) / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, scripts)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(scripts)
    return module


def fake_run(root: Path, name: str, config: dict, rows: list[dict], settings: list[dict] | None = None) -> Path:
    """A run directory as `testbed run` leaves it, as far as the report reads it."""
    d = root / name
    d.mkdir(parents=True)
    nested: dict = {"sweep": {"settings": settings or [], "grid": {"run.seed": [0, 1]}}}
    for key, value in config.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    (d / "config.yaml").write_text(yaml.safe_dump(nested, sort_keys=False))  # as config.to_yaml
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "human_baseline.json").write_text(json.dumps({"ppl_human": None, "distinct_2": 0.9}))
    return d
