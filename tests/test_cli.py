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
