"""Values typed by the schema: a YAML value checked, or a CLI string parsed, as its field's type; an error
names the key and what was expected."""

from __future__ import annotations

import contextlib
import difflib
import sys
import types
import typing
from typing import Any, Literal, Union

import yaml

from testbed.config.schema import ConfigError, require

# Values a key no longer takes, with the one to use instead. YAML 1.1 reads a bare `no` as false.
_RENAMED = {"train.precision": {"no": "fp32", False: "fp32"}}


# Merging: type-directed, so errors name the key and what was expected.


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + " | ".join(str(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
            dict: "a mapping"}.get(typing.get_origin(tp) or tp, str(tp))


def coerce(value: Any, tp: Any, key: str, from_cli: bool) -> Any:
    """Check (YAML) or parse (CLI string) `value` as type `tp`; raise ConfigError naming `key`."""
    base, optional = unwrap_optional(tp)
    # On the command line an empty value is null; a string key takes any other string as it is (run.name=none
    # names the run "none"), other keys read null, none and ~ as null.
    if from_cli and optional and isinstance(value, str) and (
            value == "" or base is not str and value.lower() in ("null", "none", "~")):
        return None
    if value is None:
        require(optional, key, f"expected {_describe(base)}, got null")
        return None
    if from_cli and isinstance(value, str) and base is not str:
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        renamed = _RENAMED.get(key, {})
        if isinstance(value, (str, bool)) and value in renamed:
            shown = "no (YAML reads it as false)" if value is False else repr(value)
            raise ConfigError(f"config key '{key}': {shown} is no longer a value; use '{renamed[value]}' "
                              f"(one of {' | '.join(map(str, choices))})")
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"config key '{key}': expected {_describe(base)}, got {value!r}{extra}")
        return value
    if base is bool:
        require(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if base is int:
        require(isinstance(value, int) and not isinstance(value, bool), key,
                 f"expected an integer, got {value!r}")
        return value
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-5 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, key, f"expected a number, got {value!r}")
        # NaN passes no range check and inf none that matters; an integer beyond a float's range is no number
        require(abs(value) <= sys.float_info.max and value == value, key, f"expected a finite number, got {value!r}")
        return float(value)
    if base is Any:  # a sweep setting's or a schedule entry's value: checked where it is applied
        return value
    if typing.get_origin(base) is list:
        require(isinstance(value, list), key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(base)
        return [coerce(v, item, f"{key}[{i}]", from_cli=False) for i, v in enumerate(value)]
    if typing.get_origin(base) is dict:
        require(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        name, item = typing.get_args(base)
        return {coerce(k, name, f"{key}.{k}", from_cli=False): coerce(v, item, f"{key}.{k}", from_cli=False)
                for k, v in value.items()}
    if base is str:
        if from_cli or isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        require(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")  # a schema bug, not a user error
