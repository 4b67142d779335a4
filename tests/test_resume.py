"""Kill real runs with real signals at several points; the resumed result must equal an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.cli import main

from .conftest import TINY

MIX = ["mixing.strategy=accumulate_subsample"]  # reads earlier generations back on resume


def assert_same_metrics(got: bytes, reference: bytes) -> None:
    """Equal rows. Numbers may differ in the last bits between two processes (MKL picks kernels by memory
    alignment; seen once in ~30 runs here), never by a different random stream: rel 1e-4 tells them apart."""
    a = [json.loads(x) for x in got.splitlines()]
    b = [json.loads(x) for x in reference.splitlines()]
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(rb[k], float):
                assert ra[k] == pytest.approx(rb[k], rel=1e-4), (ra["generation"], k)
            else:
                assert ra[k] == rb[k], (ra["generation"], k)


def _start(out: Path, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", *TINY, *MIX, f"run.out_dir={out}",
                             f"run.name={name}", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _resume(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(run_dir), "--resume"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("ref")
    proc = _start(out, "ref")
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    return (out / "ref" / "metrics.jsonl").read_bytes()


# Each point: a path whose appearance says where the run is, and the signal sent right then.
KILL_POINTS = [
    ("tokenizer", signal.SIGKILL),  # generation 0 training
    ("gen_000/model", signal.SIGKILL),  # between the checkpoint and the generation's other files
    ("gen_001/synthetic.jsonl", signal.SIGTERM),  # mixing / training of generation 1
    ("gen_001/COMPLETE", signal.SIGKILL),  # generation 2's synthetic data being generated
    ("gen_002/model", signal.SIGKILL),  # the last generation's metrics being written
]


@pytest.mark.parametrize("trigger, sig", KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_killed_run_resumes_to_the_same_metrics(tmp_path: Path, reference: bytes, trigger: str, sig: int):
    proc = _start(tmp_path, "run")
    run_dir = tmp_path / "run"
    deadline = time.time() + 300
    while not (run_dir / trigger).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before the kill point"
    proc.send_signal(sig)
    assert proc.wait(timeout=60) != 0
    assert not (run_dir / "gen_002" / "COMPLETE").exists()

    resumed = _resume(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_metrics((run_dir / "metrics.jsonl").read_bytes(), reference)
    assert not list(run_dir.rglob(".*.tmp-*"))


def test_half_written_generation_is_redone(tmp_path: Path, reference: bytes):
    out = tmp_path / "runs"
    assert main(["run", *TINY, *MIX, f"run.out_dir={out}", "run.name=r"]) == 0
    run_dir = out / "r"
    (run_dir / "gen_002" / "COMPLETE").unlink()  # as if killed while writing generation 2's files
    (run_dir / "gen_002" / "metrics.json").write_text('{"generation": 2, "ppl_hu')
    (run_dir / "gen_002" / ".samples.jsonl.tmp-99999").write_text("partial")
    lines = (run_dir / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_bytes(b"".join(lines[:2]))
    assert main(["run", str(run_dir), "--resume"]) == 0
    assert_same_metrics((run_dir / "metrics.jsonl").read_bytes(), reference)
    assert not (run_dir / "gen_002" / ".samples.jsonl.tmp-99999").exists()


def test_resume_refuses_a_different_config(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    assert main(["run", *TINY, *MIX, f"run.out_dir={out}", "run.name=r", "run.generations=1"]) == 0
    before = (out / "r" / "metrics.jsonl").read_bytes()
    args = ["run", *TINY, *MIX, f"run.out_dir={out}", "run.name=r", "run.generations=2", "train.lr=0.01"]
    assert main([*args, "--resume"]) == 2
    assert "differs from the one saved" in capsys.readouterr().err
    assert (out / "r" / "metrics.jsonl").read_bytes() == before
    # An explicit flag extends the run by one generation.
    assert main([*args[:-1], "--resume", "--allow-config-change"]) == 0
    assert len((out / "r" / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_of_a_missing_run_is_refused(tmp_path: Path, capsys):
    assert main(["run", *TINY, f"run.out_dir={tmp_path}", "run.name=nothing", "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
