"""Sweep overrides as users write them: `key=v1,v2` or `key=[v1, v2]` sets a grid axis, commas inside
brackets never split a value, and an axis reaches only the runs that read its key."""

import re
import shlex
from pathlib import Path

import pytest

from testbed import config
from testbed.cli import main
from testbed.sweep.grid import parse_axes, prepare

from .helpers import REPO

MIXING = str(REPO / "configs" / "mixing-sweep-tiny-cpu.yaml")


def _listed(capsys, *args: str) -> list[list[str]]:
    """The `testbed run` commands `testbed sweep ... --list` prints, as argument lists."""
    assert main(["sweep", *args, "--list"]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def _value(command: list[str], key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in command if a.startswith(f"{key}=")), None)


def test_values_split_at_commas_outside_brackets():
    assert parse_axes(["train.lr=0.1,0.2", "run.seed=[0, 1]", "sweep.grid.train.epochs=[1,2],3"]) == {
        "train.lr": ["0.1", "0.2"], "run.seed": [0, 1], "train.epochs": [1, 2, "3"]}
    # a key that holds a list takes each bracketed value whole
    schedules = parse_axes(["mixing.schedule=[{from_generation: 2, strategy: accumulate}],[{from_generation: 3}]"])
    assert schedules == {"mixing.schedule": ["[{from_generation: 2, strategy: accumulate}]", "[{from_generation: 3}]"]}
    for item, message in (("train.lr=[0.1,", "'train.lr': '[0.1,' is not a YAML list"),
                          ("train.lr=,", "'train.lr' has no values")):
        with pytest.raises(config.ConfigError, match=re.escape(message)):
            parse_axes([item])


@pytest.mark.parametrize("axis", ["mixing.human_fraction=0.05,0.2,0.3", "mixing.human_fraction=[0.05, 0.2, 0.3]",
                                  "sweep.grid.mixing.human_fraction=[0.05,0.2,0.3]"])
def test_an_axis_over_a_key_settings_set_replaces_their_values_where_it_is_read(axis, capsys):
    """The mixing sweep's settings are replace, 10% and 50% human, accumulate. The axis replaces the two
    fractions (those settings, now the same, are one, and lose the names that stood for 0.1 and 0.5); replace
    and accumulate read no fraction: they stay one run per seed, without it."""
    runs = _listed(capsys, MIXING, axis)
    names = [_value(r, "run.name") for r in runs]
    assert len(runs) == 15 and len(set(names)) == 15
    by_strategy: dict = {}
    for r in runs:
        by_strategy.setdefault(config.load(r[2], r[3:-2]).mixing.strategy, []).append(r)
    assert {k: len(v) for k, v in by_strategy.items()} == {"replace": 3, "fixed_fraction": 9, "accumulate": 3}
    assert all(_value(r, "mixing.human_fraction") is None for r in by_strategy["replace"] + by_strategy["accumulate"])
    assert sorted(float(_value(r, "mixing.human_fraction")) for r in by_strategy["fixed_fraction"]) == \
        [0.05] * 3 + [0.2] * 3 + [0.3] * 3
    assert "mixing.strategy=fixed_fraction,mixing.human_fraction=0.2,run.seed=1" in names
    assert "replace,run.seed=2" in names and not any(n.startswith(("10-human", "50-human")) for n in names)


def test_an_axis_no_run_reads_is_an_error(capsys):
    assert main(["sweep", MIXING, "mixing.strategy=replace,accumulate", "mixing.human_fraction=0.1,0.5",
                 "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key 'mixing.human_fraction': no run of the sweep reads it")
    assert len(err.strip().splitlines()) == 1


def test_the_readme_sweep_example_makes_only_different_runs(capsys):
    line = next(ln for ln in (REPO / "README.md").read_text().splitlines()
                if ln.startswith("testbed sweep CONFIG mixing.strategy="))
    args = shlex.split(line.split("#")[0])[3:]
    runs = _listed(capsys, str(REPO / "configs" / "default.yaml"), *args)
    resolved = []
    for r in runs:
        cfg = config.load(r[2], [a for a in r[3:] if not a.startswith(("run.name=", "run.out_dir="))])
        resolved.append({k: v for k, v in config.flatten(cfg.to_dict()).items() if k not in config.unread_keys(cfg)})
    assert len(runs) == 12 and all(resolved.count(v) == 1 for v in resolved)  # 4 mixings x 3 seeds, all different


def test_the_model_size_config_s_offline_comment_works_as_written(bpe_blocks, tmp_path: Path, capsys):
    """`sweep.grid.model.name_or_path=[DIR70m,DIR160m]` sets the size axis to the two directories (tiny
    checkpoints' config and tokenizer: listing loads no weights)."""
    from transformers import GPTNeoXConfig

    path = REPO / "configs" / "model-size-pythia-wikitext2.yaml"
    comment = next(ln for ln in path.read_text().splitlines() if "=[DIR70m,DIR160m]" in ln)
    tok, _ = bpe_blocks
    dirs = {}
    for size, width in (("70m", 16), ("160m", 32)):
        dirs[size] = tmp_path / f"pythia-{size}"
        GPTNeoXConfig(vocab_size=len(tok), hidden_size=width, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=4 * width).save_pretrained(dirs[size])
        tok.save_pretrained(dirs[size])
    args = shlex.split(comment.lstrip("# ").replace("DIR70m", str(dirs["70m"])).replace("DIR160m", str(dirs["160m"])))
    runs = _listed(capsys, *args[2:])
    assert len(runs) == 2 * 2 * 5  # settings x sizes x seeds
    assert sorted({_value(r, "model.name_or_path") for r in runs}) == sorted(map(str, dirs.values()))
    assert "keep-10,model.name_or_path=pythia-160m,run.seed=4" in {_value(r, "run.name") for r in runs}


def test_sweep_directory_and_runs_are_planned_before_anything_runs(tmp_path: Path):
    sweep_dir, runs = prepare(MIXING, ["mixing.human_fraction=[0.05,0.2]", "run.seed=0"], str(tmp_path / "s"))
    assert [r.name for r in runs] == ["replace", "mixing.strategy=fixed_fraction,mixing.human_fraction=0.05",
                                      "mixing.strategy=fixed_fraction,mixing.human_fraction=0.2", "accumulate"]
    assert not sweep_dir.exists()
