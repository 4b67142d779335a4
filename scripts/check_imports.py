"""Check, before any work, that this Python can import what testbed needs: every dependency pyproject.toml
names, at a version it accepts, and every testbed module. One line per problem, exit status 1 if any.
Dependencies' own requirements that are unmet are printed as warnings (they may still work).

    PYTHONPATH=. python scripts/check_imports.py     # scripts/gpu_launch.sh runs it first (Python 3.11+)
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import pkgutil
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def unmet(requirement: Requirement) -> str | None:
    """Why `requirement` is not met here, or None."""
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return f"missing package {requirement.name} ({requirement})"
    if not requirement.specifier.contains(version, prereleases=True):
        return f"{requirement.name} {version} does not satisfy {requirement}"
    return None


def problems() -> tuple[list[str], list[str]]:
    """(errors, warnings)."""
    errors, warnings = [], []
    modules: dict[str, list[str]] = {}  # distribution -> its top-level modules
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            modules.setdefault(canonicalize_name(dist), []).append(module)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in map(Requirement, project["dependencies"]):
        if (why := unmet(requirement)) is not None:
            errors.append(why)
            continue
        for module in modules.get(canonicalize_name(requirement.name), []):
            try:
                importlib.import_module(module)
            except Exception as exc:
                errors.append(f"cannot import {module} (of {requirement.name}): {type(exc).__name__}: {exc}")
        for needed in map(Requirement, metadata.requires(requirement.name) or []):
            wanted = needed.marker is None or needed.marker.evaluate({"extra": ""})
            if wanted and (why := unmet(needed)) is not None:
                warnings.append(f"{requirement.name} wants {needed}: {why}")
    if errors:  # testbed's own imports would fail on the same packages
        return errors, warnings
    import testbed

    for info in pkgutil.walk_packages(testbed.__path__, "testbed."):
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            errors.append(f"missing module {exc.name} (imported by {info.name})")
        except Exception as exc:
            errors.append(f"cannot import {info.name}: {type(exc).__name__}: {exc}")
    return errors, warnings


def main() -> int:
    errors, warnings = problems()
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"imports: {'ok' if not errors else f'{len(errors)} problem(s)'} (Python {sys.version.split()[0]})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
