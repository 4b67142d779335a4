"""The `accelerate launch` path on CPU: two processes share generation and train data-parallel."""

import json
import os
import subprocess
import sys
from pathlib import Path

from accelerate.commands.config.config_args import ClusterConfig

from .conftest import REPO, TINY


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_the_single_process_layout(tmp_path: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # `--cpu` makes accelerate start a single process; the multi-process launcher with ACCELERATE_USE_CPU
    # gives real data-parallel CPU processes (gloo).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    run = [*TINY, f"run.out_dir={tmp_path}"]
    two = subprocess.run([*launch, "-m", "testbed.cli", "run", *run, "run.name=two"],
                         env={**env, "ACCELERATE_USE_CPU": "true"},
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "testbed.cli", "run", *run, "run.name=one"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.stdout.count("gen 2/2") == 1  # one process reports

    single, double = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["generation"] for r in double] == [0, 1, 2]
    # Data-parallel: each process takes half the batches, so half the optimizer steps.
    assert [2 * r["train_steps"] for r in double] == [r["train_steps"] for r in single]
    # Generation was split and gathered: the synthetic set is whole.
    n_human = single[0]["train_composition"]["human"]
    for g in (1, 2):
        lines = (tmp_path / "two" / f"gen_{g:03d}" / "synthetic.jsonl").read_text().splitlines()
        assert len(lines) == n_human
        assert [json.loads(x)["index"] for x in lines] == list(range(n_human))


def test_shipped_accelerate_config_loads():
    cfg = ClusterConfig.from_yaml_file(REPO / "configs" / "accelerate" / "multi-gpu.yaml")
    assert cfg.distributed_type == "MULTI_GPU" and cfg.num_processes == 8
