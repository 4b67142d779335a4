"""The `accelerate launch` path on CPU: two processes share generation and train data-parallel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from accelerate.commands.config.config_args import ClusterConfig

from testbed import rundir

from .helpers import REPO, SMALL, TINY, launch

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _rows(run: Path) -> list[dict]:
    return rundir.read_jsonl(run / "metrics.jsonl")


def test_two_processes_match_the_single_process_layout(tmp_path: Path):
    run = [*TINY, f"run.out_dir={tmp_path}"]
    two = launch("-m", "testbed.cli", "run", *run, "run.name=two")
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "testbed.cli", "run", *run, "run.name=one"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.stdout.count("gen 2/2") == 1  # one process reports

    single, double = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["generation"] for r in double] == [0, 1, 2]
    # train.batch_size (16) is the batch of a step over both processes: as many steps as one process takes,
    # and the tokens of both processes counted (every step a full batch of 16 blocks of 16 tokens).
    assert [r["train_steps"] for r in double] == [r["train_steps"] for r in single]
    assert [r["train_tokens"] for r in double] == [r["train_steps"] * 16 * 16 for r in double]
    # Generation was split and gathered: the synthetic set is whole.
    n_human = single[0]["train_composition"]["human"]
    for g in (1, 2):
        synthetic = datasets.load_from_disk(str(tmp_path / "two" / f"gen_{g:03d}" / "synthetic"))
        assert synthetic["index"][:] == list(range(n_human))
    # Every generation ended with a check that both processes hold the same weights, tensor by tensor
    # (testbed.distributed.check_same_weights): the run would have stopped otherwise.


@pytest.mark.slow  # two launches with pretraining, about a minute
def test_two_processes_pretrain_the_base_and_take_it_on_resume(tmp_path: Path):
    """The pretrained base under `accelerate launch`: both processes train it (a step's batch split between
    them, as many steps as one process), the main process saves it once, and a resume loads it."""
    pre = [*SMALL, "run.generations=1", "data.language.domains=2", "pretrain.source=builtin",
           "pretrain.sentences=600", "pretrain.epochs=1", "eval.corpora.other=builtin:1", f"run.out_dir={tmp_path}"]
    two = launch("-m", "testbed.cli", "run", *pre, "run.name=two", "--stop-after", "-1")
    assert two.returncode == 0, two.stderr[-3000:]
    assert rundir.is_complete(tmp_path / "two", rundir.BASE) and not (tmp_path / "two" / "gen_000").exists()
    resumed = launch("-m", "testbed.cli", "run", str(tmp_path / "two"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "testbed.cli", "run", *pre, "run.name=one", "--stop-after", "-1"],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    steps = [json.loads((tmp_path / r / "base" / "pretrain.json").read_text())["steps"] for r in ("one", "two")]
    assert steps[0] == steps[1] > 0
    assert [r["generation"] for r in _rows(tmp_path / "two")] == [0, 1] and "ppl_other" in _rows(tmp_path / "two")[1]

FULL_DISK = """
import errno, sys
from testbed import rundir
from testbed.cli import main

def full(path, *objects):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))

rundir.save_pretrained = full  # only the main process saves checkpoints
sys.exit(main(sys.argv[1:]))
"""


def test_a_failure_on_the_main_process_stops_every_process(tmp_path: Path):
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    out = launch(str(script), "run", *TINY, f"run.out_dir={tmp_path}", "run.name=full")
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0] == errors[1], out.stderr[-3000:]  # both processes, the same line
    assert errors[0].startswith("error: disk full while writing") and "gen_000/model" in errors[0]


@pytest.mark.parametrize("batch_size, ok", [(16, True), (15, False)])
def test_batch_size_must_split_over_the_processes(batch_size: int, ok: bool):
    from testbed.config import ConfigError
    from testbed.distributed import check_batch_split

    if ok:
        check_batch_split(batch_size, 2)
    else:
        with pytest.raises(ConfigError, match="'train.batch_size': 15 does not split evenly over 2 processes"):
            check_batch_split(batch_size, 2)


def test_shipped_accelerate_config_loads():
    cfg = ClusterConfig.from_yaml_file(REPO / "configs" / "accelerate" / "multi-gpu.yaml")
    assert cfg.distributed_type == "MULTI_GPU" and cfg.num_processes == 8
