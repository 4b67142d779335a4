"""Sweeps through real Slurm: the single-node cluster of scripts/slurm-local.sh, submitit job arrays, scancel
and a second submission that resumes what was stopped; the sbatch requests of `sweep.slurm`; shared prefixes
as job dependencies; requeues (slow). CI installs Slurm and requires these tests (TESTBED_REQUIRE_SLURM=1);
elsewhere they are skipped when Slurm is not installed."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from testbed import rundir
from testbed.cli import main
from testbed.sweep.grid import SweepRun
from testbed.sweep.slurm import slurm_jobs

from .helpers import REPO, TINY

REQUIRED = os.environ.get("TESTBED_REQUIRE_SLURM") == "1"


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        if REQUIRED:
            pytest.fail("TESTBED_REQUIRE_SLURM=1 but Slurm is not installed or this is not root")
        pytest.skip("Slurm is not installed (apt-get install slurm-wlm munge), or not root")
    subprocess.run(["bash", str(REPO / "scripts" / "slurm-local.sh"), "start"], check=True, capture_output=True)


def _tiny_sweep(path: Path, generations: int, sweep: dict | None = None, more: tuple[str, ...] = ()) -> Path:
    values: dict = {}
    for item in [*TINY, f"run.generations={generations}", *more]:
        key, value = item.split("=")
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    values["sweep"] = sweep or {"grid": {"run.seed": [0, 1]}, "slurm": {"time_min": 10}}
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
    assert "submitted 2 job(s) as job array(s)" in capsys.readouterr().out
    stopped = sweep / "run.seed=0"
    _wait(lambda: (stopped / "gen_001" / "COMPLETE").is_file(), 180, "generation 1 of run.seed=0")
    job = _job(sweep, "run.seed=0")["job_id"]
    subprocess.run(["scancel", job], check=True)
    _wait(lambda: subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip() == "",
          60, f"job {job} to leave the queue")
    assert not (stopped / "gen_004" / "COMPLETE").exists()  # stopped part-way

    main(["sweep", "--status", str(sweep)])
    status = capsys.readouterr().out
    assert "run.seed=0  stopped" in status and job in status  # scancelled part-way: resumes

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


def test_slurm_jobs_cut_a_run_where_others_take_its_generations():
    a = SweepRun("a", [], generations=5)
    b = SweepRun("b", [], generations=5, prefix_from="a", prefix_until=2)
    c = SweepRun("c", [], generations=5, prefix_from="a", prefix_until=0)
    d = SweepRun("d", [], generations=5, prefix_from="b", prefix_until=3)
    e = SweepRun("e", [], generations=5, prefix_from="b", prefix_until=1)  # b has them once its first job ran
    jobs = [(j.run.name, j.until, j.after) for j in slurm_jobs([a, b, c, d, e])]
    assert jobs == [("a", 0, None), ("a", 2, ("a", 0)), ("a", 5, ("a", 2)), ("b", 3, ("a", 2)), ("b", 5, ("b", 3)),
                    ("c", 5, ("a", 0)), ("d", 5, ("b", 3)), ("e", 5, ("b", 3))]


# Two settings that differ only in mixing: the second takes generation 0 from the first (shared prefix).
SHARED = {"settings": [{"name": "replace", "mixing.strategy": "replace"},
                       {"name": "keep", "mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.5}],
          "slurm": {"time_min": 10}}


def _squeue(job: str) -> str:
    """'STATE REASON' of a job in the queue, '' once it has left."""
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout.strip()


def _status(sweep: Path, capsys) -> str:
    capsys.readouterr()
    main(["sweep", "--status", str(sweep)])
    return capsys.readouterr().out


def _states(sweep: Path, capsys) -> dict[str, str]:
    """Each run's state as `--status` shows it (e.g. "running, resumed x1")."""
    lines = _status(sweep, capsys).splitlines()[1:-1]
    return dict(re.split(r"\s{2,}", line.strip())[:2] for line in lines)


def _script(sweep: Path, job: str) -> str:
    """The sbatch script submitit wrote for a submitted job (an array's tasks share their array's)."""
    array = job.split("_")[0]
    return (sweep / "slurm" / array / f"{array}_submission.sh").read_text()


def test_sbatch_scripts_carry_the_slurm_requests(cluster, tmp_path: Path, capsys):
    slurm = {"time_min": 7, "mem_gb": 1, "account": "acme", "qos": "normal",
             "additional": {"hold": True, "comment": "testbed-check"}}
    cfg = _tiny_sweep(tmp_path / "tiny.yaml", 1, {"grid": {"run.seed": [0, 1]}, "slurm": slurm})
    sweep = tmp_path / "sweep"
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(sweep)]) == 0
    job = _job(sweep, "run.seed=0")["job_id"]
    try:
        script = _script(sweep, job)
        for line in ("--account=acme", "--qos=normal", "--hold", "--comment=testbed-check", "--time=7",
                     "--mem=1GB", "--cpus-per-task=1"):
            assert f"#SBATCH {line}\n" in script, line
        # Held (additional: hold), so nothing runs; the cluster took the account (no accounting database here:
        # it checks none; a real cluster's would reject an unknown one).
        assert _squeue(job) == "PENDING JobHeldUser"
        assert "Account=acme" in subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                                                text=True).stdout
    finally:
        subprocess.run(["scancel", job.split("_")[0]], check=True)
    # This node has no features and no GPU: sbatch refuses a constraint or a GPU request, which shows that
    # both reached it; the error is one line naming the section, and the refused script stays for a look.
    for key, value, line, error in (("constraint", "h100", "--constraint=h100", "Invalid feature specification"),
                                    ("gpus_per_run", 1, "--gpus-per-node=1", "Invalid generic resource")):
        refused = tmp_path / f"refused-{key}"
        cfg = _tiny_sweep(tmp_path / f"{key}.yaml", 1, {"grid": {"run.seed": [0]}, "slurm": {key: value}})
        assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(refused)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: config key 'sweep.slurm': sbatch refused the job") and error in err
        [script] = (refused / "slurm").glob(".submission_file_*.sh")
        assert f"#SBATCH {line}\n" in script.read_text()


def test_slurm_requests_on_the_command_line_override_the_file_s(cluster, tmp_path: Path, capsys):
    """`sweep.slurm.KEY=VALUE` after the config sets the sweep's own request, over the file's, as for any key
    (it is no grid axis, and the runs' commands do not carry it). Held, so nothing runs."""
    slurm = {"time_min": 10, "additional": {"hold": True}}
    cfg = _tiny_sweep(tmp_path / "tiny.yaml", 1, {"grid": {"run.seed": [0, 1]}, "slurm": slurm})
    sweep = tmp_path / "sweep"
    assert main(["sweep", str(cfg), "sweep.slurm.time_min=3", "sweep.slurm.account=acme", "--launcher", "slurm",
                 "--out", str(sweep)]) == 0
    job = _job(sweep, "run.seed=0")["job_id"]
    try:
        limit = subprocess.run(["squeue", "-h", "-j", job, "-o", "%l"], capture_output=True, text=True).stdout
        assert limit.strip() == "3:00"
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        assert "TimeLimit=00:03:00" in shown and "Account=acme" in shown
    finally:
        subprocess.run(["scancel", job.split("_")[0]], check=True)
    runs = json.loads((sweep / "sweep.json").read_text())["runs"]
    assert [r["overrides"] for r in runs] == [["run.seed=0"], ["run.seed=1"]]
    capsys.readouterr()


def test_follower_waits_on_a_dependency_and_matches_unshared_runs(cluster, tmp_path: Path, capsys):
    cfg = _tiny_sweep(tmp_path / "tiny.yaml", 1, SHARED)
    shared, unshared = tmp_path / "shared", tmp_path / "unshared"
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(shared)]) == 0
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(unshared), "--no-share"]) == 0
    # The leader's generation 0 is a job of its own; its rest and the follower wait on it in the queue.
    leader, follower = _job(shared, "replace"), _job(shared, "keep")
    assert len(leader["job_ids"]) == 2 and len(follower["job_ids"]) == 1
    script = _script(shared, follower["job_id"])
    assert f"#SBATCH --dependency=afterok:{leader['job_ids'][0]}\n" in script
    assert "#SBATCH --kill-on-invalid-dep=yes\n" in script
    gen0 = shared / "replace" / "gen_000" / "COMPLETE"

    def waits() -> bool:
        state, status = _squeue(follower["job_id"]), _status(shared, capsys)
        return (not gen0.exists() and state == "PENDING Dependency" and "keep     pending" in status
                and "waiting for the shared generations 0..0 of replace" in status)

    _wait(waits, 120, "the follower to wait on the leader's generation 0")
    _wait(lambda: main(["sweep", "--status", str(shared)]) == 0 and main(["sweep", "--status", str(unshared)]) == 0,
          300, "both sweeps to finish")
    assert "--stop-after 0" in (shared / "logs" / "replace.log").read_text()
    for name in ("replace", "keep"):
        assert [r["generation"] for r in rundir.read_jsonl(shared / name / "metrics.jsonl")] == [0, 1]
        assert (shared / name / "metrics.jsonl").read_bytes() == (unshared / name / "metrics.jsonl").read_bytes()


def test_a_failed_leader_cancels_its_followers(cluster, tmp_path: Path, capsys):
    cfg = _tiny_sweep(tmp_path / "tiny.yaml", 1, SHARED)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "replace").write_text("")  # the leader's run directory cannot be made: it fails at once
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(sweep)]) == 0
    capsys.readouterr()
    follower = _job(sweep, "keep")["job_id"]
    _wait(lambda: _squeue(follower) == "", 120, "Slurm to cancel the follower")
    shown = subprocess.run(["scontrol", "show", "job", follower], capture_output=True, text=True).stdout
    assert "JobState=CANCELLED Reason=DependencyNeverSatisfied" in shown
    assert main(["sweep", "--status", str(sweep)]) == 1
    status = capsys.readouterr().out
    assert "replace  failed" in status and "error: run directory" in status
    assert "keep     failed    " + follower in status
    assert "cancelled: replace failed before its generations 0..0, which this run takes, were done" in status
    assert not (sweep / "logs" / "keep.log").exists()  # it never started


@pytest.mark.slow
def test_requeued_and_timed_out_tasks_resume_to_the_same_metrics(cluster, tmp_path: Path, capsys):
    """A running array task requeued with `scontrol requeue`, and a task that reaches its time limit (2 min;
    USR2 60 s before it, which submitit's handler answers by requeueing the job, at every start until the
    run is done), resume and end as the uninterrupted run does; --status shows them requeued, then resumed."""
    same = {"mixing.strategy": "replace"}
    slurm = {"time_min": 10, "max_requeues": 10, "additional": {"signal": "USR2@60"}}
    # Ten times the tiny training set: a run must outlast the first warning (60-90 s after it starts).
    more = ("data.language.train_sentences=4000",)
    cfg = _tiny_sweep(tmp_path / "tiny.yaml", 6, {"settings": [{"name": "requeued", **same},
                                                            {"name": "uninterrupted", **same}], "slurm": slurm}, more)
    by_hand, timed = tmp_path / "by-hand", tmp_path / "time-limit"
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(by_hand), "--no-share"]) == 0
    job = _job(by_hand, "requeued")["job_id"]
    _wait(lambda: (by_hand / "requeued" / "gen_001" / "COMPLETE").is_file(), 300, "generation 1")
    subprocess.run(["scontrol", "requeue", job], check=True)
    _wait(lambda: _states(by_hand, capsys)["requeued"] == "requeued", 60, "--status to show the requeue")
    # Slurm holds a requeued job for about two minutes (its begin time); start it now.
    _wait(lambda: _squeue(job).startswith("PENDING"), 30, "the requeued job to be pending")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    _wait(lambda: _states(by_hand, capsys)["requeued"] == "running, resumed x1", 120, "--status: resumed")
    _wait(lambda: main(["sweep", "--status", str(by_hand)]) == 0, 600, "the sweep to finish")
    reference = (by_hand / "uninterrupted" / "metrics.jsonl").read_bytes()
    assert len(rundir.read_jsonl(by_hand / "uninterrupted" / "metrics.jsonl")) == 7
    assert (by_hand / "requeued" / "metrics.jsonl").read_bytes() == reference
    assert f"requeued by Slurm (restart 1 of job {job}): resuming" in (by_hand / "logs" / "requeued.log").read_text()

    # The same run (another name) with a time limit of 2 minutes, left to Slurm and submitit.
    cfg = _tiny_sweep(tmp_path / "timed.yaml", 6, {"settings": [{"name": "timed-out", **same}], "slurm": slurm}, more)
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(timed), "--time-min", "2"]) == 0
    job = _job(timed, "timed-out")["job_id"]
    _wait(lambda: _states(timed, capsys)["timed-out"] == "requeued", 300, "the time limit to requeue the run")
    _wait(lambda: _states(timed, capsys)["timed-out"].startswith("running, resumed x"), 300, "--status: resumed")
    _wait(lambda: main(["sweep", "--status", str(timed)]) == 0, 1500, "the run to finish")
    assert _states(timed, capsys)["timed-out"].startswith("done, resumed x")
    assert (timed / "timed-out" / "metrics.jsonl").read_bytes() == reference
    out = (timed / "slurm" / job / f"{job}_0_log.out").read_text()
    assert "Caught signal SIGUSR2 on " in out and "this job is timed-out." in out
    assert f"Requeued job {job}" in out


@pytest.mark.slow
def test_model_size_rehearsal_through_slurm(cluster, tmp_path: Path, capsys):
    """The model-size config through `--launcher slurm` on two tiny gpt_neox checkpoints (offline): its sbatch
    scripts carry the config's GPU request, followers wait on a dependency, the report has the size axis.
    This cluster has no GPU and 2 CPUs, so the request as written is refused here; the sweep then runs with
    --gpus-per-run 0 --cpus-per-run 1 --mem-gb 4."""
    import torch

    from testbed.model import train_bpe

    from .helpers.models import SCALE_DOWN, rehearse, save_checkpoint

    data = rehearse.write_corpus(tmp_path / "data", None)
    tok = train_bpe((data / "train.txt").read_text().splitlines(), 400)
    sizes = [save_checkpoint(tmp_path / f"pythia-w{w}", tok, "gpt_neox", w, torch.float16) for w in (16, 32)]
    path = REPO / "configs" / "model-size-pythia-wikitext2.yaml"
    axes = [f"model.name_or_path={sizes[0]},{sizes[1]}", "run.seed=0", *SCALE_DOWN, f"data.path={data}",
            "train.precision=fp32"]
    refused = tmp_path / "as-written"
    assert main(["sweep", str(path), *axes, "--launcher", "slurm", "--out", str(refused)]) == 2
    assert "sbatch refused the job" in capsys.readouterr().err
    [script] = (refused / "slurm").glob(".submission_file_*.sh")
    for line in ("--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=720"):
        assert f"#SBATCH {line}\n" in script.read_text(), line

    sweep = tmp_path / "sweep"
    assert main(["sweep", str(path), *axes, "--launcher", "slurm", "--out", str(sweep), "--gpus-per-run", "0",
                 "--cpus-per-run", "1", "--mem-gb", "4"]) == 0
    runs = json.loads((sweep / "sweep.json").read_text())["runs"]
    followers = [r["name"] for r in runs if r["prefix_from"]]
    assert len(runs) == 4 and len(followers) == 2  # each size's keep-10% run takes generation 0 from replace
    _wait(lambda: any(_squeue(_job(sweep, f)["job_id"]) == "PENDING Dependency" for f in followers), 120,
          "a follower to wait on its leader's generation 0")
    _wait(lambda: main(["sweep", "--status", str(sweep)]) == 0, 900, "the sweep to finish")
    assert main(["report", str(sweep)]) == 0
    rows = [line for line in (sweep / "collapse_by_size.md").read_text().splitlines() if line.startswith("| pythia-w")]
    assert [r.split("|")[1].strip() for r in rows] == ["pythia-w16", "pythia-w32"]


@pytest.mark.slow  # two Slurm sweeps of pretrained runs, about two minutes
def test_runs_of_two_seeds_share_one_pretrained_base_through_a_dependency(cluster, tmp_path: Path, capsys):
    """The seeds' runs share the base only (generation -1): the leader's first job ends after pretraining
    (--stop-after -1), the other seed's run waits on it in the queue, and its metrics equal those of a sweep
    in which each run pretrains its own base."""
    cfg = _tiny_sweep(tmp_path / "pre.yaml", 1, more=("data.language.domains=2", "pretrain.source=builtin",
                                                      "pretrain.sentences=600", "pretrain.epochs=1"))
    shared, unshared = tmp_path / "shared", tmp_path / "unshared"
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(shared)]) == 0
    assert main(["sweep", str(cfg), "--launcher", "slurm", "--out", str(unshared), "--no-share"]) == 0
    leader, follower = _job(shared, "run.seed=0"), _job(shared, "run.seed=1")
    assert len(leader["job_ids"]) == 2 and len(follower["job_ids"]) == 1
    assert f"#SBATCH --dependency=afterok:{leader['job_ids'][0]}\n" in _script(shared, follower["job_id"])
    _wait(lambda: main(["sweep", "--status", str(shared)]) == 0 and main(["sweep", "--status", str(unshared)]) == 0,
          300, "both sweeps to finish")
    assert "--stop-after -1" in (shared / "logs" / "run.seed=0.log").read_text()
    base = "base/model/model.safetensors"
    assert os.path.samefile(shared / "run.seed=0" / base, shared / "run.seed=1" / base)
    for name in ("run.seed=0", "run.seed=1"):
        assert (shared / name / "metrics.jsonl").read_bytes() == (unshared / name / "metrics.jsonl").read_bytes()
