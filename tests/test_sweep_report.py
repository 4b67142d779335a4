import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from testbed import config
from testbed.cli import main
from testbed.report.runs import Run, find_runs, group_settings, mean_std
from testbed.sweep.grid import expand, parse_axes, prepare

from .helpers import TINY


def test_mean_std_hand_worked():
    assert mean_std([1.0, 2.0, 3.0, None]) == (2.0, 1.0)  # sample std (ddof 1); missing values skipped
    assert math.isnan(mean_std([5.0])[1]) and math.isnan(mean_std([])[0])


def test_two_seed_only_sweeps_stay_apart():
    """Runs named only by their seed (run.seed=0) in two sweeps of different configs are two settings."""
    runs = [Run(Path(f"{sweep}/run.seed={s}"), {"mixing.strategy": strategy, "run.seed": s}, [], {})
            for sweep, strategy in (("a", "replace"), ("b", "accumulate")) for s in (0, 1)]
    groups = group_settings(runs)
    assert {k: [r.path.parent.name for r in v] for k, v in groups.items()} == {
        "replace": ["a", "a"], "accumulate": ["b", "b"]}


def test_expand_settings_times_grid():
    cfg = config.load(None)
    cfg.sweep.settings = [{"mixing.strategy": "replace"},
                          {"mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.1}]
    cfg.sweep.grid = {"run.seed": [0, 1]}
    runs = expand(cfg, parse_axes(["train.lr=0.001,0.002"]))
    assert len(runs) == 8
    assert runs[0].name == "mixing.strategy=replace,run.seed=0,train.lr=0.001"
    assert runs[-1].overrides == ["mixing.strategy=fixed_fraction", "mixing.human_fraction=0.1", "run.seed=1",
                                  "train.lr=0.002"]


def test_setting_names_label_reports_and_null_stays_null():
    """A setting's `name` is no override (its runs carry it in their names); a null value reaches the run as null,
    even for a string key."""
    cfg = config.load(None)
    cfg.sweep.settings = [{"name": "from scratch", "model.name_or_path": None},
                          {"name": "pretrained", "model.name_or_path": "facebook/opt-125m"}]
    runs = expand(cfg, {})
    assert [r.name for r in runs] == ["from-scratch", "pretrained"]  # a named setting's runs carry its name
    assert runs[0].overrides == ["model.name_or_path="]
    assert config.load(None, runs[0].overrides).model.name_or_path is None
    for names, message in (([1, "b"], "'sweep.settings[0].name': expected a non-empty string with a letter"),
                           (["a b", "a-b"], "two settings share a name")):
        cfg.sweep.settings = [{"name": n, "train.lr": lr} for n, lr in zip(names, (0.1, 0.2))]
        with pytest.raises(config.ConfigError, match=re.escape(message)):
            expand(cfg, {})


def test_bad_sweep_values_name_the_key(tmp_path: Path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text("sweep:\n  grid:\n    mixing.human_fraction: [0.1, 2]\n")
    assert main(["sweep", str(f), "--list"]) == 2
    assert "config key 'mixing.human_fraction': must be a fraction" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sweep")
    values: dict = {}
    for item in TINY:
        key, value = item.split("=")
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    # heal: replace for generations 1-2, then all human data in generation 3 (a schedule: a named setting)
    heal = {"name": "heal", "run.generations": 3,
            "mixing.schedule": [{"from_generation": 3, "strategy": "fixed_fraction", "human_fraction": 1.0}]}
    values["sweep"] = {"settings": [{"mixing.strategy": "replace"}, {"mixing.strategy": "accumulate"}, heal],
                       "grid": {"run.seed": [0, 1]}}
    cfg = root / "tiny-sweep.yaml"
    cfg.write_text(yaml.safe_dump(values))
    out = root / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--jobs", "2"]) == 0  # two runs at a time
    return cfg, out


def test_sweep_runs_every_setting_and_skips_finished_runs(sweep_dir, capsys):
    cfg, out = sweep_dir
    assert sorted(p.name for p in out.iterdir() if "run.seed" in p.name) == [
        "heal,run.seed=0", "heal,run.seed=1",
        "mixing.strategy=accumulate,run.seed=0", "mixing.strategy=accumulate,run.seed=1",
        "mixing.strategy=replace,run.seed=0", "mixing.strategy=replace,run.seed=1"]
    capsys.readouterr()
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    assert "6 of 6 runs done; running 0" in capsys.readouterr().out
    assert main(["sweep", "--status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "6 done" in status and re.search(r"mixing.strategy=replace,run.seed=1 +done", status)
    log = (out / "logs" / "mixing.strategy=replace,run.seed=1.log").read_text()
    assert log.startswith("$ ") and "gen 2/2" in log  # each run's output goes to its log


def test_settings_share_their_common_generations_and_get_the_same_result(sweep_dir, tmp_path: Path, capsys):
    """Per seed, replace computes generations 0-2; accumulate differs from generation 1 on and takes generation
    0 from it; heal replaces in generations 1-2 too, takes them, and computes generation 3. Every run's metrics
    equal, byte for byte, those of a sweep where each run computes all of its own."""
    cfg, out = sweep_dir
    for seed in (0, 1):
        leader = out / f"mixing.strategy=replace,run.seed={seed}"
        for follower, until, last in ((f"mixing.strategy=accumulate,run.seed={seed}", 0, 2),
                                      (f"heal,run.seed={seed}", 2, 3)):
            sources = [json.loads(f.read_text())["prefix_from"] if (f := out / follower / f"gen_00{g}" /
                                                                    "source.json").is_file() else None
                       for g in range(last + 1)]
            assert sources == [str(leader)] * (until + 1) + [None] * (last - until), follower
        assert not list(leader.glob("gen_*/source.json"))
    alone = tmp_path / "alone"  # seed 1's runs, each computing every generation
    assert main(["sweep", str(cfg), "run.seed=1", "--out", str(alone), "--jobs", "2", "--no-share"]) == 0
    assert "from another run" not in capsys.readouterr().out
    for name in ("mixing.strategy=replace", "mixing.strategy=accumulate", "heal"):  # one seed: not in the names
        got = (alone / name / "metrics.jsonl").read_bytes()
        assert got == (out / f"{name},run.seed=1" / "metrics.jsonl").read_bytes(), name
    healed = [json.loads(line) for line in (out / "heal,run.seed=1" / "metrics.jsonl").read_text().splitlines()]
    n = healed[1]["train_composition"]["synthetic@1"]  # replace, replace, then all human data
    assert [r["train_composition"] for r in healed[1:]] == [{"synthetic@1": n}, {"synthetic@2": n}, {"human": n}]


# In the default run, the resume matrix kills schedule runs before the generation where the strategy changes, and
# test_a_snapshot_is_what_a_signal_leaves resumes a SIGTERM'd run to the same bytes.
@pytest.mark.slow
def test_schedule_run_resumes_after_a_kill_to_the_same_metrics(sweep_dir, tmp_path: Path):
    """A single `testbed run` with a schedule (replace in generations 1-2, all human data in generation 3),
    killed while it mixes and trains generation 3, resumes to the metrics of the run that was not killed."""
    import os
    import shutil
    import signal
    import time

    _, out = sweep_dir
    run_dir = tmp_path / "heal"
    shutil.copytree(out / "heal,run.seed=1", run_dir)
    shutil.rmtree(run_dir / "gen_003")
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(run_dir), "--resume"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "gen_003" / "synthetic").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before the kill point"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0 and not (run_dir / "gen_003" / "COMPLETE").exists()
    threads = torch.get_num_threads()
    try:  # the resume computes with the thread count the run recorded (the sweep gave each of 2 jobs a share)
        assert main(["run", str(run_dir), "--resume"]) == 0
    finally:  # and later in-process runs of this test session use the default again
        torch.set_num_threads(threads)
    assert (run_dir / "metrics.jsonl").read_bytes() == (out / "heal,run.seed=1" / "metrics.jsonl").read_bytes()


def test_sweep_directory_follows_run_out_dir(tmp_path: Path):

    cfg = tmp_path / "c.yaml"
    cfg.write_text("sweep:\n  grid:\n    run.seed: [0, 1]\n")
    sweep_dir, runs = prepare(str(cfg), [f"run.out_dir={tmp_path / 'x'}"], None)
    assert sweep_dir == (tmp_path / "x" / "c-sweep").resolve() and len(runs) == 2
    assert all(not any(o.startswith("run.out_dir") for o in r.overrides) for r in runs)
    for items, out, message in ((["run.out_dir=a,b"], None, "use --out DIR"),
                                (["run.out_dir=a"], "b", "either run.out_dir or --out"),
                                (["run.name=x"], None, "'run.name': a sweep names its runs")):
        with pytest.raises(config.ConfigError, match=message):
            prepare(str(cfg), items, out)


def test_stopped_sweep_finishes_only_what_is_missing(sweep_dir, capsys, tmp_path):
    import shutil

    cfg, out = sweep_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "mixing.strategy=replace,run.seed=1" / "gen_002" / "COMPLETE").unlink()
    shutil.rmtree(copy / "mixing.strategy=accumulate,run.seed=1")
    assert main(["sweep", str(cfg), "--out", str(copy)]) == 0
    assert "4 of 6 runs done; running 2" in capsys.readouterr().out
    assert (copy / "mixing.strategy=replace,run.seed=1" / "gen_002" / "COMPLETE").exists()
    log = (copy / "logs" / "mixing.strategy=replace,run.seed=1.log").read_text().splitlines()
    assert [line.endswith("--resume") for line in log if line.startswith("$ ")] == [False, True]
    assert (copy / "mixing.strategy=accumulate,run.seed=1" / "gen_002" / "COMPLETE").exists()


def test_list_prints_one_command_per_run(sweep_dir):
    cfg, out = sweep_dir
    printed = subprocess.run([sys.executable, "-m", "testbed.cli", "sweep", str(cfg), "--out", str(out), "--list"],
                             capture_output=True, text=True).stdout.splitlines()
    assert len(printed) == 6 and all(line.startswith("testbed run ") for line in printed)
    assert "run.name=mixing.strategy=replace,run.seed=1" in printed[1]


def test_report_tables_and_plots(sweep_dir):
    _, out = sweep_dir
    runs = find_runs([out])
    groups = group_settings(runs)
    assert sorted(groups) == ["accumulate", "heal", "replace"]  # a named setting by its name, others by values
    assert all(len(rs) == 2 for rs in groups.values())
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| replace | 2 | [] | replace | 2 |" in md  # mixing.schedule, mixing.strategy, run.generations
    assert "## Summary" in md and "`ppl_human`" in md
    assert "## Perplexity on human test text" in md
    ppl0 = [r.rows[0]["ppl_human"] for r in groups["replace"]]
    mean, std = sum(ppl0) / 2, abs(ppl0[0] - ppl0[1]) / math.sqrt(2)  # the sample std of two values
    table = md.split("## Perplexity on human test text")[1]
    row0 = next(line for line in table.splitlines() if line.startswith("| 0 |"))
    assert row0.split(" | ")[1] == f"{mean:.2f} ± {std:.2f}"  # columns: generation, replace, accumulate, heal
    # The recovery table: heal replaced until generation 2 and healed for 1; the share of ppl_human's damage
    # undone (log scale), worked from the rows (unless generation 2 stayed within 2 sigma of generation 0's seeds).
    recovery = md.split("## Recovery")[1].split("\n## ")[0]
    heal_row = next(line for line in recovery.splitlines() if line.startswith("| heal |")).split(" | ")
    assert heal_row[1:4] == ["2", "fixed_fraction, human_fraction=1.0", "1"]  # k, healing, generations healed
    assert set(heal_row[4].split("/")) <= {"none", "early", "late"}  # the seeds' phases at k
    ppl = np.array([[row["ppl_human"] for row in r.rows] for r in groups["heal"]]).mean(axis=0)
    sigma0 = np.std([r.rows[0]["ppl_human"] for r in runs], ddof=1)
    cell = heal_row[5]
    if abs(ppl[2] - ppl[0]) <= 2 * sigma0:
        assert cell == "no damage"
    else:
        log = np.log(ppl)  # perplexities: the share of the damage on the log scale
        assert cell.startswith(f"{(log[2] - log[3]) / (log[2] - log[0]):.0%} (")
    for png in ("headline.png", "metrics-fit.png", "synthetic_ppl_gen0.png", "recovery.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    elsewhere = out.parent / "new" / "place"
    assert main(["report", str(out), "--out", str(elsewhere)]) == 0
    assert (elsewhere / "report.md").read_text() == md


def test_a_stopped_sweep_starts_no_other_run_and_resumes_to_the_same_metrics(sweep_dir, tmp_path, capsys,
                                                                             monkeypatch):
    """SIGTERM to a 3-run `--jobs 1` sweep during its first run: that run stops where it is, no other run
    starts, `--status` says so; started again, the sweep ends with the metrics of the module's sweep, which
    was not stopped (its runs computed with one thread each, as these do)."""
    import os
    import signal
    import time

    from testbed import rundir

    cfg, reference = sweep_dir
    out = tmp_path / "stopped"
    first, others = "mixing.strategy=replace", ["mixing.strategy=accumulate", "heal"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "sweep", str(cfg), "run.seed=0", "--out", str(out),
                             "--jobs", "1"], env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not rundir.is_complete(out / first, 0) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep ended before the signal"
    proc.send_signal(signal.SIGTERM)  # to the sweep alone: it stops its run
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "sweep: stopped" in err
    assert not rundir.is_complete(out / first, 2)
    assert "interrupted" in (out / "logs" / f"{first}.log").read_text()  # the run left through its handler
    assert [f.name for f in (out / "jobs").iterdir()] == [f"{first}.json"]  # no other run started
    assert not any((out / name).exists() or (out / "logs" / f"{name}.log").exists() for name in others)
    assert main(["sweep", "--status", str(out)]) == 1
    status = capsys.readouterr().out
    assert re.search(rf"{first} +stopped", status) and re.search(r"heal +new", status), status
    assert status.rstrip().endswith("1 stopped, 2 new")
    assert main(["sweep", str(cfg), "run.seed=0", "--out", str(out), "--jobs", "3"]) == 0
    for name in (first, *others):
        got = (out / name / "metrics.jsonl").read_bytes()
        assert got == (reference / f"{name},run.seed=0" / "metrics.jsonl").read_bytes(), name
