"""Kill and resume: feature combinations, each killed at every stage boundary of a generation and inside
stages, must resume to a run directory byte-identical to the uninterrupted run's; and what a resume refuses,
redoes and keeps.

What a SIGKILL leaves is exactly what the run had written, so an uninterrupted reference run copies its
directory at each kill point (in-process, at that point: a snapshot) and each snapshot is resumed in a fresh
process; `test_a_snapshot_is_what_a_signal_leaves` checks a snapshot against real SIGKILLs and a SIGTERM.
Kill points that leave the same files (after generate or after mixing: nothing new on disk) share one resume.
Runs are forked from a server that has imported torch and the testbed once (a cold start costs seconds).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from testbed import rundir
from testbed.cli import main

from .helpers import SMALL

# The dimensions: each level is a list of overrides. Curation's parts combine freely in a run.
FACTORS: dict[str, dict[str, list[str]]] = {
    "mixing": {
        "replace": ["mixing.strategy=replace"],
        "fixed_fraction": ["mixing.strategy=fixed_fraction", "mixing.human_fraction=0.5"],
        "accumulate": ["mixing.strategy=accumulate"],
        "accumulate_subsample": ["mixing.strategy=accumulate_subsample"],
        "schedule": ["mixing.strategy=replace", "mixing.schedule=[{from_generation: 2, strategy: accumulate}]"],
        "fresh": ["mixing.strategy=fixed_fraction", "mixing.human_pool=fresh", "mixing.human_fraction=0.5",
                  "data.max_train_blocks=40"],
    },
    # Sampling at temperature 0.3 repeats a few continuations (3 of 111 in generation 1), for dedup to drop.
    "dedup": {"none": [], "exact": ["curate.dedup=exact", "generation.temperature=0.3"],
              "minhash": ["curate.dedup=minhash", "curate.minhash_threshold=0.5", "generation.temperature=0.3"]},
    "filter": {"none": [], "verifier": ["curate.verifier=grammar"], "perplexity": ["curate.perplexity_keep=0.5"]},
    "screen": {
        "none": [],
        "watermark": ["generation.watermark.enabled=true", "curate.detector=watermark", "curate.z_threshold=1"],
        "oracle": ["curate.detector=oracle", "curate.detector_fpr=0.2"],
        "importance": ["curate.detector=oracle", "curate.detector_fpr=0.2", "curate.resample=importance"],
    },
    "prefix": {"off": [], "on": []},  # on: a follower takes generations 0..1 of the reference (run.prefix_from)
    "init": {v: [f"train.init={v}"] for v in ("previous", "base", "gen0")},
    "precision": {v: [f"train.precision={v}"] for v in ("fp32", "bf16")},
}
PREFIX_UNTIL = 1

# Kill points: (name, kind, where, generation). call: after testbed function `where` returns in generation g
# (the human baseline counts to generation 0); write: right after the rename that puts `where` (relative to
# the run directory, "." the directory itself) in place. A follower computes generation 2 only.
STAGES = [
    ("generate", "call", "testbed.generate:synthesize"),
    ("curate", "call", "testbed.curate:filter_synthetic"),
    ("curate: synthetic saved", "write", "gen_{g:03d}/synthetic"),
    ("mix", "call", "testbed.mixing:mix"),
    ("screen", "call", "testbed.curate:screen"),
    ("train: first validation", "call", "testbed.train:validation_loss"),
    ("train", "call", "testbed.train:train_generation"),
    ("evaluate", "call", "testbed.evaluation:evaluate_generation"),
    ("save: model", "write", "gen_{g:03d}/model"),
    ("save: metrics", "write", "gen_{g:03d}/metrics.json"),
    ("save: metrics.jsonl", "write", "metrics.jsonl"),
    ("save", "call", "testbed.rundir:save_generation"),
]
GEN0 = [
    ("run directory made", "write", ".", 0),
    ("g0 train: first validation", "call", "testbed.train:validation_loss", 0),  # of train.gen0_epochs=2
    ("g0 train", "call", "testbed.train:train_generation", 0),
    ("g0 save: model", "write", "gen_000/model", 0),
    ("g0 save", "call", "testbed.rundir:save_generation", 0),
    ("human baseline: samples written", "write", "human_samples.jsonl", 0),  # before human_baseline.json
    ("human baseline written", "write", "human_baseline.json", 0),
]
LEADER_KILLS = [*GEN0, *[(f"g{g} {name}", kind, where.format(g=g), g) for g in (1, 2) for name, kind, where in STAGES]]
FOLLOWER_KILLS = [
    ("run directory made", "write", ".", 0),
    ("prefix: generation 0 linked", "write", "gen_000", 0),
    ("prefix: generation 1 linked", "write", "gen_001", 0),
    ("prefix: human samples linked", "write", "human_samples.jsonl", 0),
    ("prefix: human baseline linked", "write", "human_baseline.json", 0),
    ("prefix: metrics.jsonl", "write", "metrics.jsonl", 0),
    *[(f"g2 {name}", kind, where.format(g=2), 2) for name, kind, where in STAGES],
]
IGNORED = {"env.json", "timing.json"}  # when and where each start ran; wall times


def all_pairs(factors: dict[str, list[str]], allowed: Callable[[dict[str, str]], bool]) -> list[dict[str, str]]:
    """A greedy pairwise covering: rows (factor -> level) in which every two levels of two factors that
    `allowed` accepts together meet at least once. `allowed` judges partial rows (False: no completion)."""
    names = list(factors)
    uncovered = {((a, x), (b, y)) for a, b in itertools.combinations(names, 2)
                 for x in factors[a] for y in factors[b] if allowed({a: x, b: y})}

    def complete(row: dict[str, str]) -> dict[str, str]:
        """`row` filled factor by factor with the level that meets the most uncovered pairs."""
        for name in names:
            if name not in row:
                options = [v for v in factors[name] if allowed({**row, name: v})]
                row[name] = max(options, key=lambda v: sum(((n, row[n]), (name, v)) in uncovered
                                                           or ((name, v), (n, row[n])) in uncovered for n in row))
        return {n: row[n] for n in names}

    def met(row: dict[str, str]) -> set:
        return {((p, row[p]), (q, row[q])) for p, q in itertools.combinations(names, 2)} & uncovered

    rows = []
    while uncovered:  # of rows started from each uncovered pair, the one that meets the most
        row = max((complete({a: x, b: y}) for (a, x), (b, y) in sorted(uncovered)), key=lambda r: len(met(r)))
        rows.append(row)
        uncovered -= met(row)
    return rows


def overrides(row: dict[str, str]) -> list[str]:
    return [o for name, level in row.items() for o in FACTORS[name][level]]


def label(row: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in row.items())


# ---------------------------------------------------------------------------------------------
# Runs in forked processes.


def _after(real: Callable, then: Callable) -> Callable:
    """`real`, followed by `then` with the same positional arguments."""
    def wrapped(*a, **k):
        out = real(*a, **k)
        then(*a)
        return out
    return wrapped


def _child(args: list[str], run_dir: str, hooks: list[tuple[str, str, int, str]], log: str) -> None:
    """`testbed run ARGS` without the report, its output into `log`; at each hook (kind, where, generation,
    action) the run directory is copied to `action`, or with action "SIGKILL" or "SIGTERM" the process sends
    itself that signal."""
    import testbed.report.tables
    from testbed import cli, loop

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    testbed.report.tables.write_report = lambda dirs, out=None: []
    current = [0]
    fired: set[int] = set()
    root = Path(run_dir)

    def fire(i: int) -> None:
        if i in fired:
            return
        fired.add(i)
        action = hooks[i][3]
        if action in SIGNALS:
            os.kill(os.getpid(), SIGNALS[action])  # SIGTERM: the run's handler raises here
        else:
            shutil.copytree(root, action, symlinks=True)

    def in_generation(fn: Callable) -> Callable:
        def wrapped(ctx, state, *g):
            current[0] = g[0] if g else 0
            return fn(ctx, state, *g)
        return wrapped

    loop.generation, loop.generation_zero = in_generation(loop.generation), in_generation(loop.generation_zero)
    for i, (kind, where, g, _) in enumerate(hooks):
        if kind == "call":
            module, name = where.split(":")
            owner = sys.modules.get(module) or __import__(module, fromlist=[name])
            setattr(owner, name, _after(getattr(owner, name), lambda *a, i=i, g=g: current[0] == g and fire(i)))
    writes = [((root / where).resolve(), g, i) for i, (kind, where, g, _) in enumerate(hooks) if kind == "write"]

    def renamed(src, dst, *a) -> None:
        for path, g, i in writes:
            if current[0] == g and Path(dst).resolve() == path:
                fire(i)

    os.rename, os.replace = _after(os.rename, renamed), _after(os.replace, renamed)
    sys.exit(cli.main(["run", *args]))


SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
_server: list = []
# What the forked runs import, once (the libraries' lazy imports included).
PRELOAD = ["testbed.cli", "testbed.loop", "testbed.report", "datasets", "datasketch", "scipy.special",
           "transformers.models.gpt2.modeling_gpt2", "transformers.tokenization_utils_tokenizers", __name__]


def _context():
    if not _server:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _server.append(ctx)
    return _server[0]


def run(args: list[str], run_dir: Path, hooks: list[tuple[str, str, int, str]] = (), expect: int = 0) -> None:
    """`testbed run ARGS` in a forked process; its exit code must be `expect` (a negative signal number)."""
    log = run_dir.parent / f"{run_dir.name}.log"
    proc = _context().Process(target=_child, args=(args, str(run_dir), list(hooks), str(log)))
    proc.start()
    proc.join(600)
    assert proc.exitcode == expect, f"exit code {proc.exitcode} ({run_dir}):\n" + log.read_text()[-3000:]


def files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory by relative path, less IGNORED."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in IGNORED}


def digest(run_dir: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in run_dir.rglob("*")):
        h.update(str(path.relative_to(run_dir)).encode() + (b"/" if path.is_dir() else path.read_bytes()))
    return h.hexdigest()


def check_row(row: dict[str, str], out: Path, kills: list[str] | None = None) -> list[str]:
    """Run `row`'s combination uninterrupted, snapshotting it at the kill points named in `kills` (None:
    all), resume every distinct snapshot, and return the kill points whose resumed run differs from the
    uninterrupted one. A follower (prefix on) runs after its leader, a reference run of the same combination,
    and must equal it."""
    args = [*SMALL, *overrides(row), f"run.out_dir={out}"]
    leader = out / "leader"
    if row["prefix"] == "on":
        run([*args, "run.name=leader"], leader)
        args += [f"run.prefix_from={leader}", f"run.prefix_until={PREFIX_UNTIL}"]
    points = FOLLOWER_KILLS if row["prefix"] == "on" else LEADER_KILLS
    points = [p for p in points if kills is None or p[0] in kills]
    assert kills is None or len(points) == len(kills), kills
    hooks = [(kind, where, g, str(out / f"snap{i}")) for i, (_, kind, where, g) in enumerate(points)]
    ref = out / "ref"
    run([*args, "run.name=ref"], ref, hooks)
    expected = files(ref)
    if row["prefix"] == "on":
        theirs = {k: v for k, v in files(leader).items() if k != "config.yaml"}
        ours = {k: v for k, v in expected.items() if k != "config.yaml" and not k.endswith("source.json")}
        assert ours == theirs, "the follower differs from its leader"
    failed, resumed = [], {}
    trained = {r["generation"]: r["train_steps"] > 0 for r in map(json.loads, (ref / "metrics.jsonl").open())}
    for (name, _, where, g), (*_, snap) in zip(points, hooks):
        snap = Path(snap)
        if not snap.is_dir() and where == "testbed.train:validation_loss" and not trained.get(g, True):
            continue  # curation left less than a block: the generation keeps its weights and never validates
        assert snap.is_dir(), f"kill point {name!r} never reached"
        key = digest(snap)
        if key not in resumed:
            run([str(snap), "--resume"], snap)
            resumed[key] = files(snap) == expected and not list(snap.rglob(".*.tmp-*"))
        if not resumed[key]:
            failed.append(name)
    return failed


# ---------------------------------------------------------------------------------------------
# The tests.

CONFIG_ROWS = all_pairs({name: list(levels) for name, levels in FACTORS.items()}, lambda row: True)


# The default run: a pairwise covering of a smaller matrix, each combination killed at one point (in turn from
# KILLS): the mixing strategies that read earlier generations back or change by generation, and every feature
# on (test_a_snapshot_is_what_a_signal_leaves resumes the defaults: no curation, train.init=previous, fp32).
DEFAULT_FACTORS = {**{name: [level for level in levels if level not in ("none", "previous", "oracle")]
                      for name, levels in FACTORS.items()}, "mixing": ["accumulate_subsample", "schedule", "fresh"]}
KILLS = {"off": ["human baseline: samples written", "human baseline written", "g1 curate: synthetic saved",
                 "g2 generate", "g1 save: model", "g0 save: model", "g2 save: metrics", "g1 train",
                 "g1 save: metrics.jsonl", "run directory made"],
         "on": ["prefix: human baseline linked", "g2 curate: synthetic saved", "prefix: generation 1 linked",
                "g2 save: model", "g2 save: metrics.jsonl"]}


def default_rows() -> list[tuple[dict[str, str], str]]:
    rows = all_pairs(DEFAULT_FACTORS, lambda row: True)
    turn = {prefix: itertools.cycle(kills) for prefix, kills in KILLS.items()}
    return [(row, next(turn[row["prefix"]])) for row in rows]


def test_all_pairs_meets_every_allowed_pair_and_no_forbidden_one():
    factors = {"a": ["0", "1", "2"], "b": ["0", "1"], "c": ["0", "1", "2"], "d": ["0", "1"]}
    allowed = lambda row: not (row.get("a") == "2" and row.get("b") == "1")  # noqa: E731
    rows = all_pairs(factors, allowed)
    assert all(allowed(r) and set(r) == set(factors) for r in rows)
    for a, b in itertools.combinations(factors, 2):
        met = {(r[a], r[b]) for r in rows}
        assert met == {(x, y) for x in factors[a] for y in factors[b] if allowed({a: x, b: y})}
    assert len(rows) < 3 * 2 * 3 * 2 / 2  # far fewer than every combination
    assert 9 <= len(CONFIG_ROWS) <= 30  # at least 3 x 3 (a pair of 3-level factors), and still small


@pytest.mark.slow
@pytest.mark.parametrize("row", CONFIG_ROWS, ids=label)
def test_a_pairwise_covering_resumes_identically_from_every_kill_point(row: dict[str, str], tmp_path: Path):
    assert check_row(row, tmp_path) == []


@pytest.mark.parametrize("row, kill", default_rows(), ids=lambda v: v if isinstance(v, str) else label(v))
def test_a_pairwise_covering_resumes_identically(row: dict[str, str], kill: str, tmp_path: Path):
    assert check_row(row, tmp_path, [kill]) == []


# Real signals, each at the point of a snapshot: SIGKILL after a function returns (mixing) and right after a
# write (the model, before the metrics); SIGTERM (a pre-empted job) before mixing and training generation 1.
KILLED = [("call", "testbed.mixing:mix", 1, "SIGKILL"), ("write", "gen_001/model", 1, "SIGKILL"),
          ("write", "gen_001/synthetic", 1, "SIGTERM")]
# The defaults (no curation, train.init=previous, fp32), with a mixing that reads earlier generations back.
DEFAULTS = [*SMALL, "mixing.strategy=accumulate_subsample"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """An uninterrupted run of DEFAULTS, snapshotted at each point of KILLED (snap0.. beside it)."""
    out = tmp_path_factory.mktemp("finished")
    run([*DEFAULTS, f"run.out_dir={out}", "run.name=r"], out / "r",
        [(kind, where, g, str(out / f"snap{i}")) for i, (kind, where, g, _) in enumerate(KILLED)])
    return out / "r"


def without_config(found: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in found.items() if k != "config.yaml"}  # config.yaml: its run.name


def test_a_snapshot_is_what_a_signal_leaves(finished: Path, tmp_path: Path):
    """The matrix's premise: the files a snapshot holds are those a run killed at the same point leaves. A
    SIGTERM'd run leaves through its handler (exit code 130, the message saying how to continue) and resumes
    to the uninterrupted run."""
    for i, (kind, where, g, sig) in enumerate(KILLED):
        killed = tmp_path / f"killed{i}"
        run([*DEFAULTS, f"run.out_dir={tmp_path}", f"run.name={killed.name}"], killed, [(kind, where, g, sig)],
            expect=130 if sig == "SIGTERM" else -signal.SIGKILL)
        snap = files(finished.parent / f"snap{i}")
        assert "gen_000/COMPLETE" in snap and "gen_001/COMPLETE" not in snap
        assert ("gen_001/model/model.safetensors" in snap) == (where == "gen_001/model")
        assert without_config(files(killed)) == without_config(snap)
    stopped = tmp_path / "killed2"  # by SIGTERM
    assert "interrupted: finished generations are kept; continue with: testbed run RUN_DIR --resume" in \
        (tmp_path / "killed2.log").read_text()
    run([str(stopped), "--resume"], stopped)
    assert without_config(files(stopped)) == without_config(files(finished))
    assert not list(stopped.rglob(".*.tmp-*"))


# ---------------------------------------------------------------------------------------------
# What a resume refuses, redoes and keeps, on copies of the finished run.


@pytest.fixture
def threads():
    """A resume in this process takes the run's saved thread count (1); later tests get the default back."""
    default = torch.get_num_threads()
    yield
    torch.set_num_threads(default)


def test_half_written_generation_is_redone(tmp_path: Path, finished: Path, monkeypatch, threads):
    run_dir = tmp_path / "r"
    shutil.copytree(finished, run_dir)
    # A resume starts from its newest checkpoint: building the base model (a full load of a pretrained one)
    # would be work thrown away.
    monkeypatch.setattr("testbed.model.base_model", lambda *a: pytest.fail("a resume built the base model"))
    (run_dir / "gen_002" / "COMPLETE").unlink()  # as if killed while writing generation 2's files
    (run_dir / "gen_002" / "metrics.json").write_text('{"generation": 2, "ppl_hu')
    (run_dir / "gen_002" / ".samples.jsonl.tmp-99999").write_text("partial")
    lines = (run_dir / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_bytes(b"".join(lines[:2]))
    assert main(["run", str(run_dir), "--resume"]) == 0
    assert (run_dir / "metrics.jsonl").read_bytes() == (finished / "metrics.jsonl").read_bytes()
    assert not (run_dir / "gen_002" / ".samples.jsonl.tmp-99999").exists()


def test_resume_refuses_a_different_config(tmp_path: Path, finished: Path, capsys, threads):
    shutil.copytree(finished, tmp_path / "r")
    before = (tmp_path / "r" / "metrics.jsonl").read_bytes()
    args = ["run", *DEFAULTS, f"run.out_dir={tmp_path}", "run.name=r", "run.generations=3", "train.lr=0.01"]
    assert main([*args, "--resume"]) == 2
    assert "differs from the one saved" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == before
    # An explicit flag extends the run by one generation.
    assert main([*args[:-1], "--resume", "--allow-config-change"]) == 0
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 4


def test_resume_of_a_missing_run_is_refused(tmp_path: Path, capsys):
    assert main(["run", *SMALL, f"run.out_dir={tmp_path}", "run.name=nothing", "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_extending_a_run_whose_newest_checkpoint_was_pruned_is_refused(tmp_path: Path, capsys, threads):
    out = tmp_path / "runs"
    args = [*SMALL, f"run.out_dir={out}", "run.name=r", "run.generations=1", "run.keep_checkpoints=none"]
    assert main(["run", *args]) == 0
    run_dir = out / "r"
    assert f"run directory: {run_dir}\n" in capsys.readouterr().out  # once it exists
    config = (run_dir / "config.yaml").read_bytes()
    assert main(["run", str(run_dir), "run.generations=2", "--resume", "--allow-config-change"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: cannot continue {run_dir} at generation 2: it starts from {run_dir}/gen_001/model, which "
                   "run.keep_checkpoints removed; run it anew with run.generations=2 (run.keep_checkpoints=last "
                   "keeps the newest model, to extend a run later)")
    assert (run_dir / "config.yaml").read_bytes() == config and rundir.completed(run_dir, 2) == 2


def test_a_resume_uses_the_thread_count_the_run_started_with(tmp_path: Path, finished: Path, threads):
    """Sums split over 1 or 2 threads differ in the last bits: only the saved count redoes a generation exactly."""
    run_dir = tmp_path / "r"
    shutil.copytree(finished, run_dir)
    (run_dir / "gen_002" / "COMPLETE").unlink()
    torch.set_num_threads(2)
    unset = [o for o in DEFAULTS if not o.startswith("run.threads=")]
    assert main(["run", *unset, f"run.out_dir={tmp_path}", "run.name=r", "--resume"]) == 0  # not a change
    assert torch.get_num_threads() == 1
    assert (run_dir / "metrics.jsonl").read_bytes() == (finished / "metrics.jsonl").read_bytes()
