import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli import main

from .helpers import REPO


@pytest.mark.parametrize("args, message", [
    (["run", "train.lr=abc"], "error: config key 'train.lr': expected a number, got 'abc'"),
    (["run", "mixing.human_fraction=2"], "error: config key 'mixing.human_fraction'"),
    (["validate", "nosuch.yaml"], "error: config file nosuch.yaml does not exist"),
    (["run", "data.path=/no/such/dir"], "error: data.path /no/such/dir is not a directory"),
    (["run", "data.language.domain=5"], "error: config key 'data.language.domain': must be in 0..0 "
                                        "(data.language.domains=1), got 5"),
])
def test_user_errors_exit_2_with_one_line(args, message, capsys, tmp_path):
    assert main([*args, f"run.out_dir={tmp_path}"] if args[0] == "run" else args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message)
    assert len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_validate_ok(capsys):
    assert main(["validate", str(REPO / "configs" / "default.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok:")


def test_corpus_errors_name_the_file(text_corpus: Path, tmp_path: Path, capsys):
    (text_corpus / "valid.txt").write_text("")
    assert main(["run", f"data.path={text_corpus}", f"run.out_dir={tmp_path / 'runs'}"]) == 2
    captured = capsys.readouterr()
    assert f"corpus file {text_corpus / 'valid.txt'} is empty" in captured.err
    assert not (tmp_path / "runs").exists() and "run directory:" not in captured.out  # none was made


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "testbed.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "validate" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["gaussian", "--samples", "1"], "error: testbed gaussian: --samples must be at least 2, got 1"),
    (["gaussian", "--repeats", "1"], "error: testbed gaussian: --repeats must be at least 2, got 1"),
    (["run", "run.log_with=wandb"], "error: config key 'run.log_with': wandb is not installed; install it with "
                                    "`pip install wandb`"),
    (["validate", "run.log_with=tensorboard"], "error: config key 'run.log_with': tensorboard is not installed"),
])
def test_more_user_errors_exit_2_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)  # whether or not it is here
    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    monkeypatch.chdir(tmp_path)  # gaussian would write runs/ here
    assert main([*args, f"run.out_dir={tmp_path / 'runs'}"] if args[0] == "run" else args) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message or captured.err.startswith(message)
    assert len(captured.err.strip().splitlines()) == 1 and not captured.out
    assert not list(tmp_path.iterdir())  # nothing written, no run directory announced


def test_run_name_none_is_a_name(tmp_path):
    """A string key takes the string it is given; an empty value is null (the timestamped default)."""
    from testbed import config

    assert config.load(None, ["run.name=none"]).run.name == "none"
    assert config.load(None, ["run.name=null"]).run.name == "null"
    assert config.load(None, ["run.name="]).run.name is None
    assert config.load(None, ["train.gen0_epochs=none"]).train.gen0_epochs is None  # not a string key
    f = tmp_path / "c.yaml"
    f.write_text("run:\n  name: null\n")
    assert config.load(f).run.name is None  # YAML null in a file is null


def test_keys_prints_each_key_with_type_default_and_comment(capsys):
    """From the dataclasses and the comments of testbed/config/schema.py: the comment after a field, the comment
    lines above it."""
    from testbed import config

    assert main(["keys", "train.weight_decay_all"]) == 0
    assert capsys.readouterr().out == ("train.weight_decay_all  bool = false\n"
                                       "    false: decay weight matrices only; true: biases and norms too (torch's "
                                       "default)\n")
    assert main(["keys", "run"]) == 0
    out = capsys.readouterr().out
    assert "run.name  str | null = null\n    run directory name; default: <config stem>-<timestamp>\n" in out
    assert "run.keep_checkpoints  all | last | none = all\n" in out
    assert "run.threads  int | null = null\n    CPU runs: torch's thread count. null: torch's default" in out
    assert main(["keys"]) == 0
    listed = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    expected = list(config.flatten(config.Config().to_dict()))  # every key, in schema order
    # flatten drops an empty mapping: eval.corpora, sweep.grid, sweep.slurm.additional
    expected.insert(expected.index("eval.decoding.repetition_penalty") + 1, "eval.corpora")
    expected.insert(expected.index("sweep.settings") + 1, "sweep.grid")
    expected.append("sweep.slurm.additional")
    assert listed == expected
    assert main(["keys", "train.sched"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown config key 'train.sched' (did you mean 'train.schedule'?)"


@pytest.mark.parametrize("args", [["--debug", "validate", "nosuch.key=1"], ["validate", "--debug", "nosuch.key=1"]])
def test_global_flags_go_before_or_after_the_command(args):
    from testbed.config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'nosuch'"):  # --debug: the traceback, not one line
        main(args)



FAKE_TORCH = """import types
__version__ = {version!r}
version = types.SimpleNamespace(cuda={cuda!r})
cuda = types.SimpleNamespace(is_available=lambda: False)
"""


@pytest.mark.parametrize("installed, cuda, replaced", [
    ("2.13.0+cpu", "cu130", True),  # after `make setup`: its CPU wheel meets torch==2.13.0 too
    ("2.13.0+cu130", "cu130", False),
    ("2.13.0+cu130", "cu128", True),
    (None, "cu130", True),  # a fresh venv
])
def test_setup_cuda_replaces_a_torch_that_is_not_its_cuda_build(installed, cuda, replaced, tmp_path):
    """`make setup-cuda` on a venv whose pip and python stand in: pip logs its arguments and an install from
    PyTorch's index writes a one-file torch of that build, so nothing is downloaded."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    site, bin_dir, log = tmp_path / "site", tmp_path / "venv" / "bin", tmp_path / "pip.log"
    site.mkdir()
    bin_dir.mkdir(parents=True)
    if installed:
        (site / "torch.py").write_text(FAKE_TORCH.format(version=installed, cuda=None if "cpu" in installed
                                                         else "13.0"))
    (bin_dir / "pip").write_text(f"""#!{sys.executable}
import pathlib, sys
args, torch = sys.argv[1:], pathlib.Path({str(site)!r}, "torch.py")
with open({str(log)!r}, "a") as f:
    f.write(" ".join(args) + "\\n")
if args[0] == "uninstall":
    torch.unlink(missing_ok=True)
elif "--index-url" in args:
    build = args[args.index("--index-url") + 1].rsplit("/", 1)[1]
    torch.write_text({FAKE_TORCH!r}.format(version="2.13.0+" + build, cuda="13.0"))
""")
    (bin_dir / "python").write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} -S \"$@\"\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = subprocess.run(["make", "-C", str(REPO), "setup-cuda", f"VENV={tmp_path / 'venv'}", "PYTHON=true",
                          f"CUDA={cuda}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert ("uninstall -q -y torch" in calls) is replaced
    assert (f"install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/{cuda}" in calls) is replaced
    assert f"torch 2.13.0+{cuda} CUDA 13.0 GPU False" in out.stdout  # the check setup-cuda ends with


@pytest.mark.parametrize("args", [["keys"], ["sweep", str(REPO / "configs" / "mixing-sweep-tiny-cpu.yaml"), "--list"]])
def test_a_reader_that_leaves_ends_the_command_quietly(args, capsys, monkeypatch):
    """`testbed keys | head`: stdout is a pipe whose reader has gone; no traceback, exit 141 (SIGPIPE's), and
    stdout then leads nowhere, so Python's last flush at exit cannot fail either."""
    import io
    import os

    read, write = os.pipe()
    os.close(read)
    pipe = io.TextIOWrapper(os.fdopen(write, "wb"))
    monkeypatch.setattr(sys, "stdout", pipe)
    assert main(args) == 141
    assert capsys.readouterr().err == ""
    pipe.write("more\n")
    pipe.flush()  # would raise BrokenPipeError if the pipe were still there
    assert os.path.samefile(f"/proc/self/fd/{pipe.fileno()}", os.devnull)
    pipe.close()


@pytest.mark.parametrize("args, message", [
    (["validate", "configs"], "error: configs is a directory: expected a YAML config file such as "
                              "configs/default.yaml"),
    (["plan", "configs"], "error: configs is a directory: expected a YAML config file"),
    (["sweep", "configs", "--list"], "error: configs is a directory: expected a YAML config file such as "
                                     "configs/default.yaml (a sweep directory: --status SWEEP_DIR)"),
    (["run", "configs"], "error: configs is a directory: expected a YAML config file such as "
                         "configs/default.yaml (or a run directory, with --resume)"),
    (["run", "configs", "--resume"], "error: configs is not a run directory (no config.yaml): nothing to resume"),
])
def test_a_directory_given_as_the_config_is_named_as_one(args, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1


def test_axes_and_overrides_may_follow_the_flags(capsys):
    """Positionals after a flag: argparse alone stops at them under a subcommand."""
    config = str(REPO / "configs" / "mixing-sweep-tiny-cpu.yaml")
    assert main(["sweep", config, "--list", "train.lr=1e-3,2e-3", "--jobs", "2", "run.seed=0"]) == 0
    after = capsys.readouterr().out.splitlines()
    assert main(["sweep", config, "train.lr=1e-3,2e-3", "run.seed=0", "--list", "--jobs", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == after
    assert len(after) == 8  # the config's 4 settings x 2 learning rates, one seed
    assert all("run.seed=0" in line and ("train.lr=1e-3" in line or "train.lr=2e-3" in line) for line in after)
    with pytest.raises(SystemExit) as exc:  # an unknown flag after them is still refused
        main(["sweep", config, "--list", "train.lr=1e-3", "--max-requeues", "5"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --max-requeues 5" in capsys.readouterr().err


@pytest.fixture
def tiny_wikitext(monkeypatch):
    """datasets.load_dataset answering ("wikitext", "wikitext-2-raw-v1") with three tiny splits shaped like the
    real ones: a blank row before a heading, lines ending in a newline."""
    import datasets

    rows = {"train": ["", " = Valkyria = \n", "", " The game began . \n", " It sold well . \n"],
            "validation": ["", " = Homarus = \n", " A lobster . \n"], "test": ["", " = Robert = \n", " An actor . \n"]}
    corpus = datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in rows.items()})

    def load_dataset(name, config=None, split=None):
        assert (name, config) == ("wikitext", "wikitext-2-raw-v1")
        return [corpus[s] for s in split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return rows


def test_data_writes_the_lines_the_hub_source_gives(tiny_wikitext, tmp_path: Path, capsys):
    from testbed.config import DataConfig
    from testbed.data import load_corpus

    out = tmp_path / "data" / "wikitext-2-raw"
    assert main(["data", "wikitext-2-raw", str(out)]) == 0
    assert (out / "train.txt").read_text() == "\n = Valkyria = \n\n The game began . \n It sold well . \n"
    assert (out / "valid.txt").read_text() == "\n = Homarus = \n A lobster . \n"
    assert capsys.readouterr().out.splitlines()[-1] == f"use it with: data.source=files data.path={out}"
    for preprocessing in ("clean", "shumailov2024"):  # blank rows matter to the second: OPT gives them a BOS
        hub = DataConfig(source="hf", hf_name="wikitext", hf_config="wikitext-2-raw-v1", preprocessing=preprocessing)
        files = DataConfig(source="files", path=str(out), preprocessing=preprocessing)
        assert load_corpus(files, 0) == load_corpus(hub, 0)
    assert load_corpus(files, 0).train == ["", " = Valkyria = \n", "", " The game began . \n", " It sold well . \n"]
    assert main(["data", "wikitext-2-raw", str(out)]) == 2  # never overwritten
    assert capsys.readouterr().err.strip() == (f"error: {out / 'train.txt'} already exists: remove it or choose "
                                               "another directory")


def test_data_offline_stops_with_one_line(tmp_path: Path, capsys, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert main(["data", "wikitext-2", str(tmp_path / "wt2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: could not load dataset 'wikitext' (wikitext-2-v1) from the hub: Couldn't reach 'wikitext' "
                   "on the Hub (OfflineModeIsEnabled). Offline? `testbed data` needs the hub: run it on a machine "
                   f"with network access and copy {tmp_path / 'wt2'} from there")
    assert not (tmp_path / "wt2").exists()
