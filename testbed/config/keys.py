"""The schema described: `testbed keys`, from the dataclasses and the comments in schema.py."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from testbed.config.coerce import field_types, unwrap_optional
from testbed.config.schema import Config, ConfigError


@dataclass
class KeyDoc:
    key: str  # dotted
    type: str  # e.g. "int", "float | null", "replace | fixed_fraction"
    default: str  # as YAML writes it
    comment: str  # the comment lines above the field and the comment after it, joined


def _type_name(tp: Any) -> str:
    base, optional = unwrap_optional(tp)
    if typing.get_origin(base) is Literal:
        name = " | ".join(str(a) for a in typing.get_args(base))
    else:
        name = {list: "list", dict: "mapping"}.get(typing.get_origin(base), getattr(base, "__name__", str(base)))
    return name + (" | null" if optional else "")


def _field_comments() -> dict[str, dict[str, str]]:
    """Class name -> field name -> its comment in schema.py: the comment lines right above the field, then
    the comment at the end of its line."""
    import ast
    import inspect
    import io
    import tokenize

    source = inspect.getsource(inspect.getmodule(Config))
    own_line, trailing = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (own_line if tok.line.strip().startswith("#") else trailing)[tok.start[0]] = text
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above, line = [], stmt.lineno - 1
                while line in own_line:
                    above.insert(0, own_line[line])
                    line -= 1
                after = [trailing[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in trailing]
                out.setdefault(node.name, {})[stmt.target.id] = " ".join(above + after)
    return out


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def describe_keys(prefix: str = "") -> list[KeyDoc]:
    """Every config key under `prefix` (a section or a key, "" for all; else any key with `prefix` as a part
    of its dotted path, so that `slurm` finds sweep.slurm.*) with its type, default and comment, in schema
    order. A prefix that matches nothing is a ConfigError."""
    comments = _field_comments()

    def walk(obj: Any, path: str) -> list[KeyDoc]:
        docs = []
        hints = field_types(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                docs += walk(value, f"{path}{f.name}.")
            else:
                docs.append(KeyDoc(f"{path}{f.name}", _type_name(hints[f.name]), _yaml_value(value),
                                   comments.get(type(obj).__name__, {}).get(f.name, "")))
        return docs

    docs = walk(Config(), "")
    prefix = prefix.strip(".")
    chosen = [d for d in docs if not prefix or d.key == prefix or d.key.startswith(prefix + ".")] or \
        [d for d in docs if f".{prefix}." in f".{d.key}."]
    if not chosen:
        hint = difflib.get_close_matches(prefix, [d.key for d in docs] + list(field_types(Config)), n=1)
        raise ConfigError(f"unknown config key '{prefix}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    return chosen
