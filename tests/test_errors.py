"""Every bad input stops with one line naming the problem, exit code 2, and nothing written."""

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import rundir
from testbed.cli import main

from .helpers import TINY


def _fails(args: list[str], out: Path, capsys, message: str | tuple[str, ...]) -> None:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    for part in (message,) if isinstance(message, str) else message:
        assert part in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or not list(out.iterdir()), "something was written"


@pytest.mark.parametrize("yaml_text, message", [
    ("train: [1, 2\n", "is not valid YAML"),
    ("just a string\n", "must hold a mapping of sections, got str"),
    ("train:\n  lr: fast\n", "config key 'train.lr': expected a number, got 'fast'"),
    ("train:\n  nope: 1\n", "unknown config key 'train.nope'"),
    ("mixing:\n  human_fraction: 3\n", "config key 'mixing.human_fraction': must be a fraction"),
])
def test_bad_config_files(tmp_path: Path, capsys, yaml_text, message):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    _fails(["run", str(f), f"run.out_dir={tmp_path / 'runs'}"], tmp_path / "runs", capsys, message)


@pytest.mark.parametrize("split, content, message", [
    ("train", None, "train.txt does not exist"),
    ("valid", b"", "valid.txt is empty"),
    ("test", b"\xff\xfe bad bytes\n", "test.txt is not UTF-8 text"),
    ("valid", b"two words\n", ("valid.txt has ", "tokens, shorter than one block (data.block_size=16)")),
])
def test_bad_corpus(text_corpus: Path, tmp_path: Path, capsys, split, content, message):
    f = text_corpus / f"{split}.txt"
    f.unlink()
    if content is not None:
        f.write_bytes(content)
    out = tmp_path / "runs"
    _fails(["run", *TINY, f"data.path={text_corpus}", f"run.out_dir={out}", "tokenizer.vocab_size=300"], out,
           capsys, message)


def test_model_path_missing_or_empty(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    _fails(["run", *TINY, "model.name_or_path=./no/such/model", f"run.out_dir={out}"], out, capsys,
           f"model.name_or_path: {Path.cwd() / 'no/such/model'} does not exist")  # made absolute
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(["run", *TINY, f"model.name_or_path={empty}", f"run.out_dir={out}"], out, capsys,
           f"model.name_or_path: {empty} holds no loadable model or tokenizer")


def test_hub_name_while_offline(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    _fails(["run", *TINY, "model.name_or_path=gpt2", f"run.out_dir={out}"], out, capsys,
           "'gpt2' is a hub name, and the hub cannot be reached (offline)")


def test_hub_dataset_while_offline(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    _fails(["run", *TINY, "data.source=hf", "data.hf_name=wikitext", "data.hf_config=wikitext-2-raw-v1",
            f"run.out_dir={out}"], out, capsys, "could not load dataset 'wikitext'")


def test_run_name_cannot_escape(tmp_path: Path, capsys):
    out = tmp_path / "runs"
    _fails(["run", *TINY, "run.name=../../etc", f"run.out_dir={out}"], out, capsys, "config key 'run.name'")
    with pytest.raises(rundir.RunDirError):
        rundir.run_path(str(out), "a/../../b")


def test_disk_full_keeps_finished_generations(tmp_path: Path, capsys, monkeypatch):
    out = tmp_path / "runs"
    real = rundir.save_pretrained
    calls = {"n": 0}

    def failing_save(path, *objects):
        if path.parent.name == "gen_002":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        calls["n"] += 1
        return real(path, *objects)

    monkeypatch.setattr(rundir, "save_pretrained", failing_save)
    assert main(["run", *TINY, f"run.out_dir={out}", "run.name=full"]) == 2
    err = capsys.readouterr().err  # progress bars, then the error
    assert err.strip().splitlines()[-1].startswith("error: disk full while writing") and "Traceback" not in err
    run = out / "full"
    assert rundir.completed(run, 2) == 2  # generations 0 and 1 are intact
    assert [r["generation"] for r in rundir.read_jsonl(run / "metrics.jsonl")] == [0, 1]
    assert (run / "gen_001" / "model" / "model.safetensors").is_file()
    monkeypatch.setattr(rundir, "save_pretrained", real)
    assert main(["run", str(run), "--resume"]) == 0
    assert rundir.completed(run, 2) == 3


def test_keep_checkpoints_last(tmp_path: Path):
    out = tmp_path / "runs"
    assert main(["run", *TINY, f"run.out_dir={out}", "run.name=k", "run.keep_checkpoints=last"]) == 0
    kept = sorted(p.parent.name for p in (out / "k").glob("gen_*/model"))
    assert kept == ["gen_000", "gen_002"]


def test_debug_shows_the_traceback(tmp_path: Path):
    out = subprocess.run([sys.executable, "-m", "testbed.cli", "--debug", "run", "train.lr=abc"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr


# Two cold-started runs. In the default run, test_no_tensors_outlive_their_generation counts what each generation
# leaves behind, exactly: a leaked tiny model is far below this test's 5% margin of RSS.
@pytest.mark.slow
def test_memory_stays_flat_across_generations(tmp_path: Path):
    """Peak RSS of a 6-generation run is no more than a few MB above that of a 1-generation run."""
    code = ("import resource, sys; from testbed.cli import main; main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peaks = {}
    for n in (1, 6):
        out = subprocess.run([sys.executable, "-c", code, "run", *TINY, f"run.out_dir={tmp_path}",
                              f"run.name=m{n}", f"run.generations={n}"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[n] = int(out.stdout.strip().splitlines()[-1]) / 1024  # MB
    assert peaks[6] - peaks[1] < 0.05 * peaks[1], peaks


def test_no_tensors_outlive_their_generation(tmp_path: Path, monkeypatch):
    """The live tensors after each generation are the same in number: nothing from earlier generations is kept."""
    import gc

    import torch

    from testbed import config, loop

    counts = []
    real = rundir.mark_complete

    def count_after(run, generation):
        real(run, generation)
        gc.collect()
        counts.append(sum(isinstance(o, torch.Tensor) for o in gc.get_objects()))

    monkeypatch.setattr(rundir, "mark_complete", count_after)
    loop.run(config.load(None, [*TINY, "run.generations=4"]), tmp_path / "run")
    assert len(counts) == 5 and len(set(counts)) == 1, counts
