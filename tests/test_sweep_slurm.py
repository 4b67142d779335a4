"""A sweep through real Slurm: the single-node cluster of scripts/slurm-local.sh, submitit job arrays,
scancel, and a second submission that resumes what was stopped. CI installs Slurm and requires this test
(TESTBED_REQUIRE_SLURM=1); elsewhere it is skipped when Slurm is not installed."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from testbed import rundir
from testbed.cli import main

from .conftest import REPO, TINY

REQUIRED = os.environ.get("TESTBED_REQUIRE_SLURM") == "1"


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        if REQUIRED:
            pytest.fail("TESTBED_REQUIRE_SLURM=1 but Slurm is not installed or this is not root")
        pytest.skip("Slurm is not installed (apt-get install slurm-wlm munge), or not root")
    subprocess.run(["bash", str(REPO / "scripts" / "slurm-local.sh"), "start"], check=True, capture_output=True)


def _tiny_sweep(path: Path, generations: int) -> Path:
    values: dict = {}
    for item in [*TINY, f"run.generations={generations}"]:
        key, value = item.split("=")
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    values["sweep"] = {"grid": {"run.seed": [0, 1]}, "slurm": {"time_min": 10}}
    path.write_text(yaml.safe_dump(values))
    return path


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _job(sweep: Path, name: str) -> dict:
    return json.loads((sweep / "jobs" / f"{name}.json").read_text())


def test_slurm_sweep_completes_and_resumes_after_scancel(cluster, tmp_path: Path, capsys):
    cfg = _tiny_sweep(tmp_path / "tiny.yaml", generations=4)
    sweep = tmp_path / "sweep"
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(sweep)]) == 0
    assert "submitted 2 run(s) as job array" in capsys.readouterr().out
    stopped = sweep / "run.seed=0"
    _wait(lambda: (stopped / "gen_001" / "COMPLETE").is_file(), 180, "generation 1 of run.seed=0")
    job = _job(sweep, "run.seed=0")["job_id"]
    subprocess.run(["scancel", job], check=True)
    _wait(lambda: subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip() == "",
          60, f"job {job} to leave the queue")
    assert not (stopped / "gen_004" / "COMPLETE").exists()  # stopped part-way

    main(["sweep", "--status", str(sweep)])
    status = capsys.readouterr().out
    assert "run.seed=0  partial" in status and job in status

    # Submitting again skips what is done and resumes what was stopped; --wait blocks until the end.
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(sweep), "--wait"]) == 0
    for name in ("run.seed=0", "run.seed=1"):
        rows = rundir.read_jsonl(sweep / name / "metrics.jsonl")
        assert [r["generation"] for r in rows] == [0, 1, 2, 3, 4]
    commands = [line for line in (sweep / "logs" / "run.seed=0.log").read_text().splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and "--resume" not in commands[0] and commands[1].endswith("--resume")
    assert _job(sweep, "run.seed=0")["job_id"] != job  # a new job resumed it
    assert main(["sweep", "--status", str(sweep)]) == 0
    assert "2 done" in capsys.readouterr().out
    assert main(["report", str(sweep)]) == 0
    assert (sweep / "report.md").is_file()
