"""The pretrained base (pretrain) and extra evaluation sets (eval.corpora): runs that share one base equal runs
that train their own byte for byte, a kill during pretraining resumes to the same metrics, every corpus key is
in every row, and the files source pretrains on one directory and fine-tunes on another."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import config, language, rundir
from testbed.cli import main
from testbed.config import LanguageConfig
from testbed.sweep import sharing
from testbed.sweep.grid import SweepRun, share_prefixes
from testbed.sweep.slurm import slurm_jobs

from .helpers import TINY

# Two domains, a small base pretrained on their mixture, generation 0 fine-tuned on domain 0; scored on
# domain 1 and on the mixture.
PRETRAIN = [*TINY, "run.generations=1", "data.language.domains=2", "pretrain.source=builtin",
            "pretrain.sentences=600", "pretrain.epochs=1", "eval.corpora.other=builtin:1",
            "eval.corpora.both=builtin:all"]
CORPUS_KEYS = ("ppl_{}", "ppl_{}_head", "ppl_{}_tail", "kl_per_word_{}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """seed0 pretrains the base; seed1-shared takes it (run.prefix_until=-1); seed1 pretrains its own."""
    out = tmp_path_factory.mktemp("pretrain")
    for name, extra in (("seed0", []), ("seed1-shared", ["run.seed=1", f"run.prefix_from={out / 'seed0'}",
                                                         "run.prefix_until=-1"]), ("seed1", ["run.seed=1"])):
        assert main(["run", *PRETRAIN, f"run.out_dir={out}", f"run.name={name}", *extra]) == 0, name
    return out


def test_a_shared_base_gives_the_metrics_of_an_own_one(runs: Path):
    base = "base/model/model.safetensors"
    assert os.path.samefile(runs / "seed0" / base, runs / "seed1-shared" / base)  # linked in, not trained
    assert (runs / "seed1" / base).read_bytes() == (runs / "seed0" / base).read_bytes()  # pretrain.seed seeds it
    assert (runs / "seed1-shared" / "metrics.jsonl").read_bytes() == (runs / "seed1" / "metrics.jsonl").read_bytes()
    record = json.loads((runs / "seed0" / "base" / "pretrain.json").read_text())
    assert record["steps"] > 0 and record["held_out_blocks"] > 0 and record["epochs"] == 1


def test_every_corpus_key_is_in_every_row(runs: Path):
    rows = rundir.read_jsonl(runs / "seed0" / "metrics.jsonl")
    assert [r["generation"] for r in rows] == [0, 1]
    for row in rows:
        for name in ("other", "both"):
            for key in CORPUS_KEYS:
                assert key.format(name) in row, (row["generation"], key.format(name))
            assert row[f"ppl_{name}"] > 1 and row[f"kl_per_word_{name}"] > 0
    # Generation 0 also scores the base on each (its zero-shot values), as on the human test text.
    assert all(key.format(name) + "_zero_shot" in rows[0] for name in ("other", "both") for key in CORPUS_KEYS)
    assert rows[0]["ppl_other_zero_shot"] > 1 and rows[0]["kl_per_word_other_zero_shot"] > 0
    assert "ppl_other_zero_shot" not in rows[1]


KILL_IN_PRETRAINING = """
import os, signal, sys
import testbed.train as train
calls = [0]
def wrapped(*a, _real=train.micro_step, **k):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return _real(*a, **k)
train.micro_step = wrapped
from testbed.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_kill_during_pretraining_resumes_to_the_same_metrics(runs: Path, tmp_path: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["run", *PRETRAIN, f"run.out_dir={tmp_path}", "run.name=killed"]
    killed = subprocess.run([sys.executable, "-c", KILL_IN_PRETRAINING, "5", *args], capture_output=True, env=env)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "killed"
    assert (run_dir / "tokenizer").is_dir() and not rundir.is_complete(run_dir, rundir.BASE)
    resumed = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(run_dir), "--resume"],
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "metrics.jsonl").read_bytes() == (runs / "seed0" / "metrics.jsonl").read_bytes()


def test_the_files_source_pretrains_on_one_directory_and_fine_tunes_on_another(text_corpus: Path, tmp_path: Path,
                                                                              capsys):
    pre = tmp_path / "pre"
    pre.mkdir()
    lines = language.corpus(LanguageConfig(train_sentences=400, valid_sentences=8, test_sentences=40), seed=5)
    for split in ("train", "test"):
        (pre / f"{split}.txt").write_text("\n".join(lines[split]) + "\n", encoding="utf-8")
    args = [*TINY, "run.generations=1", f"data.path={text_corpus}", "pretrain.source=files", f"pretrain.path={pre}",
            "pretrain.epochs=1", f"eval.corpora.language={pre}", f"run.out_dir={tmp_path / 'runs'}", "run.name=r"]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert "ppl_language" in out and "base" in out  # the terminal table: a column per corpus, the base's row
    run_dir = tmp_path / "runs" / "r"
    rows = rundir.read_jsonl(run_dir / "metrics.jsonl")
    assert all(f"ppl_language{s}" in rows[0] for s in ("", "_head", "_tail", "_zero_shot"))
    assert "kl_per_word_language" not in rows[0]  # a directory has no exact probabilities
    saved = config.load(str(run_dir / "config.yaml"), saved=True)
    assert saved.pretrain.path == str(pre) and saved.data.path == str(text_corpus)


def test_runs_that_share_only_the_base_take_it_from_the_first():
    """Seeds share the base but not generation 0; mixing settings of one seed share generation 0 too; another
    pretraining shares nothing. Under Slurm the leader's first job ends at the base (--stop-after -1)."""
    base = config.load(None, PRETRAIN)
    cfgs = [config.overridden(base, o) for o in (["run.seed=0"], ["run.seed=1"],
                                                 ["run.seed=1", "mixing.strategy=fixed_fraction"],
                                                 ["pretrain.epochs=2"])]
    assert sharing.shared_prefix(cfgs[0], cfgs[1]) == sharing.BASE
    assert sharing.shared_prefix(cfgs[1], cfgs[2]) == 0
    assert sharing.shared_prefix(cfgs[0], cfgs[3]) == sharing.NONE
    no_pretrain = [config.load(None, [*TINY, f"run.seed={s}"]) for s in (0, 1)]
    assert sharing.shared_prefix(*no_pretrain) == sharing.NONE
    runs = share_prefixes([SweepRun(n, [], generations=1) for n in "abcd"], cfgs, Path("/sweep"))
    assert [(r.name, r.prefix_from, r.prefix_until) for r in runs] == [
        ("a", None, 0), ("d", None, 0), ("b", "a", -1), ("c", "b", 0)]
    jobs = [(j.run.name, j.until, j.after) for j in slurm_jobs(runs)]
    assert jobs == [("a", -1, None), ("a", 1, ("a", -1)), ("d", 1, None), ("b", 0, ("a", -1)), ("b", 1, ("b", 0)),
                    ("c", 1, ("b", 0))]


@pytest.mark.parametrize("args, message", [
    (["eval.corpora.extra=/no/such/dir"], "error: config key 'eval.corpora.extra': /no/such/dir holds no test.txt"),
    (["eval.corpora.other=builtin:2", "data.language.domains=2"],
     "error: config key 'eval.corpora.other': expected builtin:all or builtin:D with D in 0..1"),
    (["pretrain.source=files", "pretrain.path=/no/such/dir"],
     "error: config key 'pretrain.path': /no/such/dir holds no train.txt"),
    (["pretrain.source=files"], "error: config key 'pretrain.path': is required when pretrain.source is 'files'"),
    (["data.language.domains=0"], "error: config key 'data.language.domains': must be at least 1, got 0"),
    (["pretrain.source=builtin", "model.name_or_path=/some/checkpoint"], "error: config key 'pretrain.source'"),
    (["mixing.strategy=fixed_fraction", "mixing.human_pool=pretrain"], "error: config key 'mixing.human_pool': "
                                                                        "pretrain draws from the pretraining corpus"),
])
def test_bad_pretraining_and_corpus_input_exits_2_and_writes_nothing(args, message, capsys, tmp_path):
    assert main(["run", *args, f"run.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_hub_corpus_offline_stops_with_one_line_before_the_run_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main(["run", *TINY, "eval.corpora.wiki=hf:wikitext/wikitext-103-raw-v1", f"run.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not load dataset 'wikitext' (wikitext-103-raw-v1) from the hub")
    assert err.endswith("Offline? Name a directory holding test.txt instead")
    assert len(err.splitlines()) == 1 and not list(tmp_path.iterdir())


def test_domain_0_of_several_is_the_run_without_domains(tmp_path: Path, one_generation_run: Path):
    """data.language.domains only adds domains: a run on domain 0 of three writes the metrics of the run
    with the default domains: 1, byte for byte (so the default run's numbers do not depend on data.language.domains)."""
    assert main(["run", *TINY, "run.generations=1", f"run.out_dir={tmp_path}", "run.name=three",
                 "data.language.domains=3"]) == 0
    assert (one_generation_run / "metrics.jsonl").read_bytes() == (tmp_path / "three" / "metrics.jsonl").read_bytes()


def test_validate_reads_the_pretraining_and_evaluation_texts(tmp_path: Path, capsys):
    """testbed validate checks what a run would read: an empty test.txt of an eval corpus stops it."""
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "train.txt").write_text("a line of text\n" * 4, encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "test.txt").write_text("", encoding="utf-8")
    ok = ["pretrain.source=files", f"pretrain.path={tmp_path / 'pre'}"]
    assert main(["validate", *ok, f"eval.corpora.pre={tmp_path / 'pre'}"]) == 2  # pre holds no test.txt
    assert "holds no test.txt" in capsys.readouterr().err
    assert main(["validate", *ok, f"eval.corpora.empty={tmp_path / 'empty'}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: corpus file {tmp_path / 'empty' / 'test.txt'} is empty"
    assert main(["validate", *ok]) == 0
    assert "pretrained first: pretrain.source=files" in capsys.readouterr().out
