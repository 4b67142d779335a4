"""testbed validate: what a run or each run of a sweep needs, before anything is queued; relative paths in a
config file resolve against the file's directory."""

import os
import shutil
from pathlib import Path

import pytest

from testbed import config
from testbed.cli import main

from .helpers import REPO


def _rejects(args: list[str], capsys, message: str) -> None:
    assert main(["validate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err, err


def test_a_local_model_path_that_does_not_exist(capsys):
    _rejects([str(REPO / "configs" / "shumailov2024-opt125m-replace.yaml"), "model.name_or_path=/nonexistent/opt-125m"],
             capsys, "sweep run run.seed=0: config key 'model.name_or_path': /nonexistent/opt-125m does not exist")


def test_hub_names_offline_must_be_in_the_cache(tmp_path: Path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    _rejects(["model.name_or_path=org/tiny-model"], capsys,
             "config key 'model.name_or_path': 'org/tiny-model' is a hub name, the hub is offline")
    # The same name once the cache holds its config and tokenizer (the layout huggingface_hub writes).
    repo = tmp_path / "models--org--tiny-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json"):
        (repo / "snapshots" / "abc123" / name).write_text("{}")
    from testbed.sweep.validate import check_resources

    check_resources(config.load(None, ["model.name_or_path=org/tiny-model"]))
    _rejects(["tokenizer.name_or_path=org/other-tokenizer"], capsys, "config key 'tokenizer.name_or_path': "
             "'org/other-tokenizer' is a hub name")


@pytest.mark.parametrize(("setting", "message"), [
    ("{name: far too much, mixing.human_fraction: 1.7}",
     "sweep.settings[1] (far too much): config key 'mixing.human_fraction': must be a fraction in [0, 1], got 1.7"),
    ("{mixing.stratgy: accumulate}",
     "sweep.settings[1]: unknown config key 'mixing.stratgy' (did you mean 'mixing.strategy'?)"),
])
def test_each_setting_of_a_sweep_is_checked(setting: str, message: str, tmp_path: Path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text("mixing: {strategy: fixed_fraction}\nsweep:\n  settings:\n    - {mixing.human_fraction: 0.1}\n"
                    f"    - {setting}\n  grid:\n    run.seed: [0, 1]\n")
    _rejects([str(path)], capsys, message)
    assert main(["sweep", str(path), "--list"]) == 2  # as sweep --list rejects it
    capsys.readouterr()


def test_every_run_of_a_sweep_is_checked(tmp_path: Path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"sweep:\n  grid:\n    data.path: [{tmp_path}, missing]\n")
    _rejects([str(path)], capsys, f"sweep run data.path=missing: config key 'data.path': {tmp_path / 'missing'} "
                                  "is not a directory")


def test_relative_paths_in_a_config_file_resolve_against_its_directory(tmp_path: Path, text_corpus: Path,
                                                                         monkeypatch, capsys):
    # The shipped file names the same folder whatever directory the command runs from.
    shipped = REPO / "configs" / "wikitext2-tiny-cpu.yaml"
    expected = os.path.abspath(REPO / ".." / "shared" / "data" / "wikitext-2")
    assert config.load(shipped).data.path == expected
    monkeypatch.chdir(tmp_path)
    assert config.load(shipped).data.path == expected
    # A copy of it beside a copy of that folder validates from another directory (the shared data may be absent).
    project = tmp_path / "a" / "project"
    (project / "configs").mkdir(parents=True)
    shutil.copy(shipped, project / "configs")
    shutil.copytree(text_corpus, tmp_path / "a" / "shared" / "data" / "wikitext-2")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["validate", str(project / "configs" / "wikitext2-tiny-cpu.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    # On the command line a relative path is relative to the current directory; hub names stay names. A run
    # saves its config with absolute paths, so a resume reads them as they were (saved=True keeps them).
    cfg = config.load(project / "configs" / "wikitext2-tiny-cpu.yaml", ["data.path=corpus"])
    assert cfg.data.path == str(elsewhere / "corpus")
    (project / "configs" / "local-model").mkdir()
    (project / "configs" / "c.yaml").write_text("model: {name_or_path: local-model}\ntokenizer: {name_or_path: "
                                                 "org/tokenizer}\n")
    cfg = config.load(project / "configs" / "c.yaml")
    assert (cfg.model.name_or_path, cfg.tokenizer.name_or_path) == (str(project / "configs" / "local-model"),
                                                                    "org/tokenizer")
    saved = tmp_path / "config.yaml"
    saved.write_text("data: {path: corpus}\n")
    assert config.load(saved, saved=True).data.path == "corpus"
    assert config.load(saved).data.path == str(tmp_path / "corpus")
