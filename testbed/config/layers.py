"""Applying values to a config: the layers (dataclass defaults < YAML file < CLI overrides), type-directed
merging whose errors name the key, paths made absolute, and the resolved config written back as YAML.

A mapping key (eval.corpora, sweep.grid, sweep.slurm.additional) takes the entries a later layer names
beside those of the earlier ones. Every problem is raised as a ConfigError whose message names the key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any

import yaml

from testbed.config.checks import check
from testbed.config.coerce import coerce, field_types, unwrap_optional
from testbed.config.schema import Config, ConfigError, PretrainConfig, require


def _merge(obj: Any, values: dict[str, Any], prefix: str, from_cli: bool) -> None:
    hints = field_types(type(obj))
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            hint = difflib.get_close_matches(str(name), list(hints), n=1)
            extra = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"unknown config key '{key}'{extra}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            require(isinstance(value, dict), key, f"expected a mapping of sub-keys, got {value!r}")
            _merge(current, value, key + ".", from_cli)
        elif isinstance(current, dict) and isinstance(value, dict):  # a mapping takes entries, e.g. eval.corpora.NAME=
            setattr(obj, name, {**current, **coerce(value, hints[name], key, from_cli)})
        else:
            setattr(obj, name, coerce(value, hints[name], key, from_cli))


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """Turn ['train.lr=1e-3', ...] into {'train.lr': '1e-3', ...}."""
    out: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        out[key.strip()] = value
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}': '{p}' is not a section")
        node[leaf] = value
    return nested


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file with yaml.safe_load; a missing, unparsable or non-mapping file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


# Keys that name a file or directory. In a config file a relative path is relative to the file's directory
# (the same whatever directory the command runs from); on the command line, to the current directory. The
# model and tokenizer keys name a local path when the value starts with /, . or ~, or names one that exists;
# otherwise a hub name, left as it is.
PATH_KEYS = ("data.path", "tokenizer.name_or_path", "model.name_or_path", "pretrain.path")
_HUB_OR_PATH = ("tokenizer.name_or_path", "model.name_or_path")


def is_local_path(name: str, base: Path = Path()) -> bool:
    """Whether a model or tokenizer name is a local path (relative to `base`) rather than a hub name."""
    return name.startswith((".", "/", "~")) or (base / Path(name).expanduser()).exists()


def resolve_path(key: str, value: Any, base: Path) -> Any:
    """`value` of the path key `key` made absolute against `base`, if it is a relative local path."""
    if not isinstance(value, str) or not value or (key in _HUB_OR_PATH and not is_local_path(value, base)):
        return value
    return os.path.abspath(base / Path(value).expanduser())


def resolve_corpus(value: Any, base: Path) -> Any:
    """An eval.corpora source made absolute against `base` if it is a relative directory (not builtin: or hf:)."""
    if not isinstance(value, str) or value.startswith(("builtin:", "hf:")):
        return value
    return resolve_path("eval.corpora", value, base)


def _resolve_file_paths(values: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a config file's values (its sweep settings and grid included) absolute
    against `base`, the file's directory, in place."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        if isinstance(values.get(section), dict) and name in values[section]:
            values[section][name] = resolve_path(key, values[section][name], base)
    corpora = (values.get("eval") or {}).get("corpora") if isinstance(values.get("eval"), dict) else None
    if isinstance(corpora, dict):
        values["eval"]["corpora"] = {k: resolve_corpus(v, base) for k, v in corpora.items()}
    sweep = values.get("sweep") if isinstance(values.get("sweep"), dict) else {}
    for setting in sweep.get("settings") or []:
        if isinstance(setting, dict):
            for key in PATH_KEYS:
                if key in setting:
                    setting[key] = resolve_path(key, setting[key], base)
    grid = sweep.get("grid")
    if isinstance(grid, dict):
        for key in PATH_KEYS:
            if isinstance(grid.get(key), list):
                grid[key] = [resolve_path(key, v, base) for v in grid[key]]


def load(path: str | Path | None = None, overrides: list[str] | None = None, saved: bool = False) -> Config:
    """Build a checked Config from defaults < YAML file < CLI overrides. Relative paths (PATH_KEYS) are made
    absolute: the file's against its directory, the overrides' against the current one. `saved`: the file
    is a run directory's config.yaml, whose paths are kept as written (resolved when the run began; an
    older run's relative ones meant the current directory)."""
    cfg = Config()
    file_values = read_yaml(path) if path is not None else {}
    if path is not None and not saved:
        _resolve_file_paths(file_values, Path(path).parent)
    _merge(cfg, file_values, "", from_cli=False)
    flat = parse_overrides(overrides or [])
    for key in PATH_KEYS:
        if key in flat:
            flat[key] = resolve_path(key, flat[key], Path())
    for key in flat:
        if key.startswith("eval.corpora."):
            flat[key] = resolve_corpus(flat[key], Path())
    _merge(cfg, _nest(flat), "", from_cli=True)
    # Naming a directory of text files is unambiguous: it means source=files, unless a source is named
    # on the command line too, or the file names both.
    data_file = file_values.get("data") or {}
    if cfg.data.path is not None and "data.source" not in flat and ("data.path" in flat or "source" not in data_file):
        cfg.data.source = "files"
    check(cfg)
    return cfg


def merge_values(cfg: Config, values: dict[str, Any]) -> None:
    """Set dotted keys, typed as YAML gives them (a sweep setting's), on `cfg`, then check it."""
    _merge(cfg, _nest(values), "", from_cli=False)
    check(cfg)


def overridden(cfg: Config, overrides: list[str]) -> Config:
    """A checked copy of `cfg` with `key.sub=value` overrides applied (a sweep's run from its config)."""
    out = copy.deepcopy(cfg)
    _merge(out, _nest(parse_overrides(overrides)), "", from_cli=True)
    check(out)
    return out


def takes_list(key: str) -> bool:
    """Whether the dotted `key` holds a list (mixing.schedule, train.lora.target_modules); False if unknown."""
    obj, (*parents, leaf) = Config(), key.split(".")
    for name in parents:
        obj = getattr(obj, name, None)
        if not dataclasses.is_dataclass(obj):
            return False
    return typing.get_origin(unwrap_optional(field_types(type(obj)).get(leaf))[0]) is list


# The keys of mixing.strategy fixed_fraction: a run in which no generation mixes that way reads none of them.
FIXED_FRACTION_KEYS = ("mixing.human_fraction", "mixing.fixed_subset", "mixing.complementary", "mixing.human_pool")


def unread_keys(cfg: Config) -> set[str]:
    """Keys whose value does not change what this config's run computes (e.g. mixing.human_fraction when every
    generation replaces or accumulates, the pretrain keys without pretraining)."""
    strategies = {cfg.mixing.at(g).strategy for g in range(1, cfg.run.generations + 1)}
    unread = set() if "fixed_fraction" in strategies else set(FIXED_FRACTION_KEYS)
    if cfg.pretrain.source == "none":
        unread |= {f"pretrain.{f.name}" for f in dataclasses.fields(PretrainConfig) if f.name != "source"}
    return unread


def from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from a resolved dict (e.g. a run directory's config.yaml), with checks."""
    cfg = Config()
    _merge(cfg, values, "", from_cli=False)
    check(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff(a: Config, b: Config) -> list[str]:
    """Keys (dotted) whose values differ between two configs."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa if fa[k] != fb.get(k))


def changes(saved: Config, cfg: Config) -> list[str]:
    """Keys `cfg` changes in a run's saved config, on resume. Where a run lives is not what it is (a moved
    run directory resumes), and an unset run.threads means the count the run started with."""
    return [k for k in diff(saved, cfg) if k not in ("run.out_dir", "run.name")
            and not (k == "run.threads" and cfg.run.threads is None)]
