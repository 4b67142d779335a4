"""testbed validate: what a run or each run of a sweep needs, before anything is queued; relative paths in a
config file resolve against the file's directory."""

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
    expected = str(REPO / "data" / "wikitext-2")  # where `testbed data wikitext-2 data/wikitext-2` writes
    assert config.load(shipped).data.path == expected
    monkeypatch.chdir(tmp_path)
    assert config.load(shipped).data.path == expected
    # A copy of it beside a copy of that folder validates from another directory (the data may be absent).
    project = tmp_path / "a" / "project"
    (project / "configs").mkdir(parents=True)
    shutil.copy(shipped, project / "configs")
    shutil.copytree(text_corpus, project / "data" / "wikitext-2")
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


def test_a_model_or_tokenizer_directory_must_hold_its_files(tmp_path: Path, capsys):
    from testbed.sweep.validate import check_resources

    model, tok = tmp_path / "model", tmp_path / "tok"
    model.mkdir()
    tok.mkdir()
    _rejects([f"model.name_or_path={model}"], capsys, f"config key 'model.name_or_path': {model} holds no "
             "config.json, so no model (save_pretrained writes one)")
    (model / "config.json").write_text("{}")
    _rejects([f"model.name_or_path={model}"], capsys, f"config key 'model.name_or_path': {model} holds no tokenizer "
             "files (tokenizer_config.json, tokenizer.json, or vocab.json with merges.txt); or set "
             "tokenizer.name_or_path")
    _rejects([f"model.name_or_path={model}", f"tokenizer.name_or_path={tok}"], capsys,
             f"config key 'tokenizer.name_or_path': {tok} holds no tokenizer files")
    (tok / "vocab.json").write_text("{}")  # a byte-level BPE needs its merges too
    _rejects([f"tokenizer.name_or_path={tok}"], capsys, "config key 'tokenizer.name_or_path'")
    (tok / "merges.txt").write_text("")
    check_resources(config.load(None, [f"model.name_or_path={model}", f"tokenizer.name_or_path={tok}"]))
    (model / "tokenizer_config.json").write_text("{}")
    check_resources(config.load(None, [f"model.name_or_path={model}"]))
    _rejects([f"model.name_or_path={model / 'config.json'}"], capsys, "config key 'model.name_or_path': "
             f"{model / 'config.json'} is not a directory")


def test_a_value_the_run_ignores_is_refused(tmp_path: Path, capsys):
    """50% human data without fixed_fraction mixing would run replace: one line naming the key and the file."""
    path = tmp_path / "c.yaml"
    path.write_text("mixing:\n  human_fraction: 0.5\n")
    _rejects([str(path)], capsys, f"config key 'mixing.human_fraction': {path} sets 0.5, which this run ignores: "
             "it is read only with mixing.strategy=fixed_fraction in some generation")
    assert main(["run", str(path), f"run.out_dir={tmp_path}"]) == 2  # before any work
    assert "config key 'mixing.human_fraction'" in capsys.readouterr().err and not list(tmp_path.glob("c-*"))
    assert main(["validate", str(path), "mixing.strategy=fixed_fraction"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("sweep", "message"), [
    # no run of this setting reads its fraction, though the other setting's runs do
    ("{settings: [{mixing.strategy: replace, mixing.human_fraction: 0.5}, {mixing.strategy: fixed_fraction}]}",
     "sweep.settings[0]: config key 'mixing.human_fraction': no run of the setting reads it (it is read only with "
     "mixing.strategy=fixed_fraction in some generation)"),
    ("{grid: {run.seed: [0, 1]}}", "config key 'mixing.human_fraction': the config sets 0.5, which no run of the "
                                   "sweep reads (it is read only with mixing.strategy=fixed_fraction"),
    ("{grid: {mixing.strategy: [replace, accumulate]}}", "config key 'mixing.human_fraction': the config sets 0.5"),
])
def test_a_value_no_run_of_a_sweep_reads_is_refused(sweep: str, message: str, tmp_path: Path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"mixing: {{human_fraction: 0.5}}\nsweep: {sweep}\n")
    _rejects([str(path)], capsys, message)
    # the file's fraction is read where a run mixes fixed_fraction
    path.write_text("mixing: {human_fraction: 0.5}\nsweep: {grid: {mixing.strategy: [replace, fixed_fraction]}}\n")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
