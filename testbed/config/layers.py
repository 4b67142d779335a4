"""Applying values to a config: the layers (dataclass defaults < YAML file < CLI overrides), type-directed
merging whose errors name the key, paths made absolute, and the resolved config written back as YAML.

Every way into a config (a file, the command line, a run's saved config, a sweep's run) goes through `apply`,
so they all merge, resolve paths, infer data.source and check alike. A mapping key (eval.corpora, sweep.grid,
sweep.slurm.additional) takes the entries a later layer names beside those of the earlier ones. Every problem
is raised as a ConfigError whose message names the key or the file.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from testbed.config.checks import check, unread_keys
from testbed.config.coerce import coerce, field_types, unwrap_optional
from testbed.config.schema import Config, ConfigError, require


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key named twice in one mapping (safe_load keeps the last one silently)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat keys it merges
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if first is not key_node:
                    raise ConstructorError(problem=f"key {key!r} appears twice in one mapping (lines "
                                                   f"{first.start_mark.line + 1} and {key_node.start_mark.line + 1})")
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what the parser was doing, the cause, and where (line, column)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc).split()) or type(exc).__name__

    def at(mark: Any) -> str:
        return f" (line {mark.line + 1}, column {mark.column + 1})"

    problem = (exc.problem or "") + (at(exc.problem_mark) if exc.problem_mark else "")
    if not exc.context:
        return problem
    context_at = exc.context_mark and (exc.problem_mark is None or exc.context_mark.line != exc.problem_mark.line)
    return exc.context + (at(exc.context_mark) if context_at else "") + (f": {problem}" if problem else "")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file; a missing, empty, unparsable or non-mapping file, or one that names a key twice in
    a mapping, is a ConfigError naming it (and for a YAML error, its line and column)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty: leave it out to run the built-in default, or write the "
                          "keys to change (testbed keys lists them)")
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


@dataclass(frozen=True)
class Layer:
    """One layer of values: a mapping of sections as YAML types it (a config file), or `key.sub=value` strings
    (the command line, a sweep's run), and the directory its relative paths are relative to (None: kept as
    written, as in a run's saved config, whose paths were resolved when it began)."""

    values: dict[str, Any] | list[str]
    base: Path | None = Path()

    def nested(self) -> dict[str, Any]:
        return self.values if isinstance(self.values, dict) else _nest(parse_overrides(self.values))

    def keys(self) -> set[str]:
        """The dotted keys the layer names (a mapping key's entries as KEY.NAME)."""
        return set(flatten(self.nested()))


def _resolve_paths(cfg: Config, values: dict[str, Any], base: Path) -> None:
    """Make the relative paths that the layer `values` set on `cfg` absolute against `base`, in place: the
    PATH_KEYS, eval.corpora entries, and the PATH_KEYS of sweep settings and grid axes."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        if name in values.get(section, {}):
            obj = getattr(cfg, section)
            setattr(obj, name, resolve_path(key, getattr(obj, name), base))
    for name in values.get("eval", {}).get("corpora", {}):
        cfg.eval.corpora[name] = resolve_corpus(cfg.eval.corpora[name], base)
    sweep = values.get("sweep", {})
    if "settings" in sweep:
        for setting in cfg.sweep.settings:
            for key in set(PATH_KEYS) & set(setting):
                setting[key] = resolve_path(key, setting[key], base)
    for key in set(PATH_KEYS) & set(sweep.get("grid", {})):
        cfg.sweep.grid[key] = [resolve_path(key, v, base) for v in cfg.sweep.grid[key]]


def apply(cfg: Config, *layers: Layer) -> Config:
    """A checked copy of `cfg` with the layers' values applied in order: merged by type (errors name the key),
    relative paths made absolute against each layer's base, data.source=files inferred where a layer names
    data.path alone, then every range and cross-field rule checked (checks.check) once all are on."""
    out = copy.deepcopy(cfg)
    for layer in layers:
        values = layer.nested()
        _merge(out, values, "", from_cli=not isinstance(layer.values, dict))
        if layer.base is not None:
            _resolve_paths(out, values, layer.base)
        # Naming a directory of text files is unambiguous: it means source=files, unless the same layer
        # names a source too (a later layer's source wins as any key does).
        data = values.get("data", {})
        if "path" in data and "source" not in data and out.data.path is not None:
            out.data.source = "files"
    check(out)
    return out


def _layers(path: str | Path | None, overrides: list[str] | None, saved: bool) -> tuple[Layer, ...]:
    cli = Layer(overrides or [])
    if path is None:
        return (cli,)
    return Layer(read_yaml(path), None if saved else Path(path).parent), cli


def load(path: str | Path | None = None, overrides: list[str] | None = None, saved: bool = False) -> Config:
    """Build a checked Config from defaults < YAML file < CLI overrides. Relative paths (PATH_KEYS) are made
    absolute: the file's against its directory, the overrides' against the current one. `saved`: the file
    is a run directory's config.yaml, whose paths are kept as written (resolved when the run began; an
    older run's relative ones meant the current directory)."""
    return apply(Config(), *_layers(path, overrides, saved))


def load_run(path: str | Path | None = None, overrides: list[str] | None = None, saved: bool = False) -> Config:
    """The config of one run (`testbed run`, `validate`, each run of a sweep): `load`, refusing a value the run
    would ignore (unread_keys: e.g. mixing.human_fraction when no generation mixes fixed_fraction). Refused:
    such a key the command line sets, or the file sets unless the command line chose what makes the run
    ignore it (mixing.strategy=replace on a fixed_fraction file). A value equal to the key's default is
    allowed (it changes nothing, and a sweep's run may need it to undo the file's); so are the values of a
    saved config and of a file with a sweep section, whose runs need not all read them (the sweep checks
    that some run does)."""
    layers = _layers(path, overrides, saved)
    cfg = apply(Config(), *layers)
    cli = layers[-1].keys()
    from_file = set() if saved or path is None or cfg.sweep.settings or cfg.sweep.grid else layers[0].keys()
    values, defaults = flatten(cfg.to_dict()), flatten(Config().to_dict())
    for key, rule in unread_keys(cfg).items():
        if values[key] == defaults[key]:
            continue
        if key in cli or key in from_file and not rule.decided_by(cli):
            where = "the command line" if key in cli else str(path)
            raise ConfigError(f"config key '{key}': {where} sets {values[key]!r}, which this run ignores: it is "
                              f"read only with {rule.when}")
    return cfg


def merge_values(cfg: Config, values: dict[str, Any]) -> Config:
    """A checked copy of `cfg` with dotted keys set, typed as YAML gives them (a sweep setting's)."""
    return apply(cfg, Layer(_nest(values)))


def overridden(cfg: Config, overrides: list[str]) -> Config:
    """A checked copy of `cfg` with `key.sub=value` overrides applied (a sweep's run from its config), as
    `load` applies the command line's."""
    return apply(cfg, Layer(overrides))


def from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from a resolved dict (e.g. a run directory's config.yaml), with checks; paths as written."""
    return apply(Config(), Layer(values, base=None))


def takes_list(key: str) -> bool:
    """Whether the dotted `key` holds a list (mixing.schedule, train.lora.target_modules); False if unknown."""
    obj, (*parents, leaf) = Config(), key.split(".")
    for name in parents:
        obj = getattr(obj, name, None)
        if not dataclasses.is_dataclass(obj):
            return False
    return typing.get_origin(unwrap_optional(field_types(type(obj)).get(leaf))[0]) is list


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
