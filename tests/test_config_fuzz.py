"""Bad configs never crash: arbitrary YAML files and overrides give `ok` or one line naming the key, exit 2."""

import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from testbed import config
from testbed.cli import main

KEYS = [d.key for d in config.describe_keys()]
# What a user can get wrong: every kind of YAML scalar (huge, NaN, inf, unicode), and nested junk.
SCALARS = (st.none() | st.booleans() | st.integers() | st.sampled_from([10**30, -(10**30), 2**63, 10**400, -1])
           | st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 0.5, 1.5])
           | st.text(max_size=12) | st.sampled_from(["", "null", "~", "no", "1e-3", "[", "{a: 1}", "ü€😀", "a,b"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS), inner, max_size=3), max_leaves=6)
# Known names (sections, keys, a key's last part) as often as junk ones.
NAMES = st.sampled_from(sorted({p for k in KEYS for p in k.split(".")})) | st.text(max_size=8)
KEY = st.sampled_from(KEYS) | st.text(max_size=12) | st.sampled_from(["train", "sweep.settings", "a..b", "."])
# The sweep section's own junk: settings that are not mappings, grids whose axes are not lists.
SWEEP = st.fixed_dictionaries({}, optional={
    "settings": st.lists(st.dictionaries(st.sampled_from(KEYS + ["name"]) | st.text(max_size=6), VALUES, max_size=3)
                         | VALUES, max_size=3) | VALUES,
    "grid": st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), st.lists(VALUES, max_size=3) | VALUES,
                            max_size=2) | VALUES})
FILE = (st.dictionaries(NAMES, st.dictionaries(NAMES, VALUES, max_size=4) | VALUES, max_size=4)
        | st.fixed_dictionaries({"sweep": SWEEP}) | VALUES).map(lambda d: yaml.safe_dump(d, allow_unicode=True))


def _override_text(value) -> str:
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).removesuffix(
        "\n...\n").strip()


# (an argument starting with "-" is a flag, argparse's to reject)
OVERRIDE = (st.builds(lambda k, v: f"{k}={_override_text(v)}", KEY, VALUES) | st.text(max_size=16)).filter(
    lambda o: not o.startswith("-"))


def _write(tmp: Path, text: str) -> Path:
    f = tmp / "c.yaml"
    f.write_text(text, encoding="utf-8")
    return f


def _one_line_or_ok(code: int, out: str, err: str) -> None:
    assert code in (0, 2), (code, err)
    if code == 0:
        assert out.startswith("ok:") and not err, (out, err)
    else:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        # The message names a key, a file, an override (its form key.sub=value is what is wrong) or a run.
        assert re.search(r"config key '|config file |override |key\.sub=value|sweep axis '|sweep runs", err), err


# The same examples every run (derandomize): a failure here is a crash found, not a new draw.
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(text=FILE | st.text(max_size=40), overrides=st.lists(OVERRIDE, max_size=3))
@example(text="train: {lr: .nan}", overrides=["train.epochs=1e400"])
@example(text="train:\n  lr: 1\n\tepochs: 2\ntrain: {}\n", overrides=[])  # a YAML error's message spans lines
@example(text="mixing: {human_fraction: 0.5}\nsweep: {grid: {run.seed: [0, 1]}}\n", overrides=[])
def test_bad_configs_give_ok_or_one_line_naming_the_key(text, overrides, tmp_path_factory, capsys):
    capsys.readouterr()
    f = _write(tmp_path_factory.mktemp("fuzz"), text)
    try:
        config.load(f, overrides)
    except config.ConfigError as exc:
        assert "\n" not in str(exc)
    code = main(["validate", str(f), *overrides])
    captured = capsys.readouterr()
    _one_line_or_ok(code, captured.out, captured.err)
    code = main(["sweep", str(f), *overrides, "--list"])  # and the grid it makes
    captured = capsys.readouterr()
    if code == 0:
        assert all(line.startswith("testbed run ") for line in captured.out.splitlines()), captured.out
        captured = captured._replace(out="ok:")
    _one_line_or_ok(code, captured.out, captured.err)


@pytest.mark.parametrize("file, overrides, message", [  # each crashed (a traceback) before the fuzz found it
    ({"sweep": {"settings": [None]}}, [], "config key 'sweep.settings[0]': expected a mapping, got null"),
    ({"sweep": {"grid": {"run.seed": None}}}, [], "config key 'sweep.grid.run.seed': expected a list, got null"),
    ({"sweep": {"grid": {"run.seed": []}}}, [], "config key 'sweep.grid.run.seed': has no values"),
    ({1: 2}, [], "unknown config key '1'"),
    ({}, ["a\nb=1"], "unknown config key 'a\\nb'"),
    ({}, ["train.epochs=1e400"], "config key 'train.epochs': expected an integer, got '1e400'"),
    ({"train": {"lr": 10**400}}, [], "config key 'train.lr': expected a finite number, got 1000"),
    ({}, ["train.lr=.nan"], "config key 'train.lr': expected a finite number, got nan"),
    ({}, ["train.lr=.inf"], "config key 'train.lr': expected a finite number, got inf"),
    ({}, ["run.seed=-1"], "config key 'run.seed': must be in 0..2**32-1, got -1"),
])
def test_what_the_fuzz_found_is_one_line_naming_the_key(file, overrides, message, tmp_path: Path, capsys):
    assert main(["validate", str(_write(tmp_path, yaml.safe_dump(file))), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
