import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli import main

from .conftest import REPO


@pytest.mark.parametrize("args, message", [
    (["run", "train.lr=abc"], "error: config key 'train.lr': expected a number, got 'abc'"),
    (["run", "mixing.human_fraction=2"], "error: config key 'mixing.human_fraction'"),
    (["validate", "nosuch.yaml"], "error: config file nosuch.yaml does not exist"),
    (["run", "data.path=/no/such/dir"], "error: data.path /no/such/dir is not a directory"),
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
    assert f"corpus file {text_corpus / 'valid.txt'} is empty" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "testbed.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "validate" in out.stdout
