"""Kill real runs with real signals at several points; the resumed result must equal an uninterrupted one."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from testbed import rundir
from testbed.cli import main

from .helpers import TINY

MIX = ["mixing.strategy=accumulate_subsample"]  # reads earlier generations back on resume


# Runs `testbed run` with every rename (the last step of each atomic write: rundir, save_pretrained,
# save_synthetic) followed by a check: once RUN_DIR/TRIGGER exists, the process sends itself SIGNAL. The kill
# lands right after that write, on any machine, however fast.
KILL_AT = """
import os, signal, sys
from pathlib import Path
trigger, sig = Path(sys.argv[1]), int(sys.argv[2])
for name in ("rename", "replace"):
    def wrapped(src, dst, *a, _real=getattr(os, name), **k):
        _real(src, dst, *a, **k)
        if trigger.exists():
            os.kill(os.getpid(), sig)
    setattr(os, name, wrapped)
from testbed.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _start(out: Path, name: str, *extra: str, kill_at: tuple[str, int] | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    args = ["run", *TINY, *MIX, f"run.out_dir={out}", f"run.name={name}", *extra]
    if kill_at is None:
        command = [sys.executable, "-m", "testbed.cli", *args]
    else:
        command = [sys.executable, "-c", KILL_AT, str(out / name / kill_at[0]), str(int(kill_at[1])), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _resume(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(run_dir), "--resume"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    proc = _start(out, "ref")
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    return out / "ref"


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> bytes:
    return (reference_run / "metrics.jsonl").read_bytes()


# Each point: the write after which the run is killed, and the signal.
KILL_POINTS = [
    ("tokenizer", signal.SIGKILL),  # the run directory just made, before generation 0 trains
    ("gen_000/model", signal.SIGKILL),  # between the checkpoint and the generation's other files (slow)
    ("gen_001/synthetic", signal.SIGTERM),  # before mixing and training generation 1
    ("gen_001/COMPLETE", signal.SIGKILL),  # before generation 2's synthetic data (slow)
    ("gen_002/model", signal.SIGKILL),  # before the last generation's metrics are written
]
# Kept out of the default run for time (pytest -m slow); the resume matrix covers every stage boundary there.
SLOW = {"tokenizer", "gen_000/model", "gen_001/COMPLETE"}


@pytest.mark.parametrize("trigger, sig", [pytest.param(p, s, id=p, marks=[pytest.mark.slow] if p in SLOW else [])
                                          for p, s in KILL_POINTS])
def test_killed_run_resumes_to_the_same_metrics(tmp_path: Path, reference: bytes, trigger: str, sig: int):
    proc = _start(tmp_path, "run", kill_at=(trigger, sig))
    run_dir = tmp_path / "run"
    code = proc.wait(timeout=300)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), proc.stderr.read().decode()[-2000:]
    assert (run_dir / trigger).exists() and not (run_dir / "gen_002" / "COMPLETE").exists()

    resumed = _resume(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "metrics.jsonl").read_bytes() == reference  # byte for byte: CPU runs are deterministic
    assert not list(run_dir.rglob(".*.tmp-*"))


def test_half_written_generation_is_redone(tmp_path: Path, reference_run: Path, reference: bytes, monkeypatch):
    out = tmp_path / "runs"
    shutil.copytree(reference_run, out / "r")
    # A resume starts from its newest checkpoint: building the base model (a full load of a pretrained one)
    # would be work thrown away.
    monkeypatch.setattr("testbed.loop.base_model", lambda *a: pytest.fail("a resume built the base model"))
    run_dir = out / "r"
    (run_dir / "gen_002" / "COMPLETE").unlink()  # as if killed while writing generation 2's files
    (run_dir / "gen_002" / "metrics.json").write_text('{"generation": 2, "ppl_hu')
    (run_dir / "gen_002" / ".samples.jsonl.tmp-99999").write_text("partial")
    lines = (run_dir / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_bytes(b"".join(lines[:2]))
    assert main(["run", str(run_dir), "--resume"]) == 0
    assert (run_dir / "metrics.jsonl").read_bytes() == reference
    assert not (run_dir / "gen_002" / ".samples.jsonl.tmp-99999").exists()


def test_resume_refuses_a_different_config(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    assert main(["run", *TINY, *MIX, f"run.out_dir={out}", "run.name=r", "run.generations=1"]) == 0
    assert f"run directory: {out / 'r'}\n" in capsys.readouterr().out  # once it exists
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


def test_extending_a_run_whose_newest_checkpoint_was_pruned_is_refused(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    args = [*TINY, f"run.out_dir={out}", "run.name=r", "run.generations=1", "run.keep_checkpoints=none"]
    assert main(["run", *args]) == 0
    run_dir = out / "r"
    config = (run_dir / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main(["run", str(run_dir), "run.generations=2", "--resume", "--allow-config-change"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: cannot continue {run_dir} at generation 2: it starts from {run_dir}/gen_001/model, which "
                   "run.keep_checkpoints removed; run it anew with run.generations=2 (run.keep_checkpoints=last "
                   "keeps the newest model, to extend a run later)")
    assert (run_dir / "config.yaml").read_bytes() == config and rundir.completed(run_dir, 2) == 2


def test_a_resume_uses_the_thread_count_the_run_started_with(tmp_path: Path):
    """Sums split over 1 or 2 threads differ in the last bits: only the saved count redoes a generation exactly."""
    args = ["run", *TINY, *MIX, f"run.out_dir={tmp_path}", "run.name=r"]
    default = torch.get_num_threads()
    try:
        assert main([*args, "run.threads=1"]) == 0
        run_dir = tmp_path / "r"
        metrics = (run_dir / "metrics.jsonl").read_bytes()
        (run_dir / "gen_002" / "COMPLETE").unlink()
        torch.set_num_threads(2)
        assert main([*args, "--resume"]) == 0  # run.threads unset: not a config change, the saved 1 is used
        assert torch.get_num_threads() == 1
        assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    finally:
        torch.set_num_threads(default)
