"""The package's layers: modules import each other without a cycle, counting imports inside functions too (a
cycle dodged by a late import is still a cycle), and the reports and a sweep's status load neither torch nor
transformers."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "testbed"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """testbed module -> the testbed modules it imports anywhere in its source."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py") if "modules" not in p.parts}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                edges |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        # Importing testbed.a.b from outside testbed.a runs testbed.a's __init__ first.
        edges |= {p for e in edges for p in _parents(e) if not name.startswith(p + ".")}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with one path that does."""
    found = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    found.append([*path, start])
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == ["a", "b", "c", "a"]


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert {"testbed.report.tables", "testbed.report.recovery", "testbed.report.runs", "testbed.config"} <= set(graph)
    assert "testbed.report.runs" in graph["testbed.report.recovery"]
    assert "testbed.report.tables" not in graph["testbed.report.recovery"]
    assert "testbed.config" in graph["testbed.loop"]  # through testbed.config.* too
    assert not cycles(graph), cycles(graph)


def test_the_package_has_its_homes():
    modules = set(import_graph())
    for home in ("config", "sweep", "report", "toys", "metrics"):
        assert f"testbed.{home}" in modules and any(m.startswith(f"testbed.{home}.") for m in modules), home
    flat = {m for m in modules if m.count(".") == 1}
    assert {"testbed.loop", "testbed.data", "testbed.generate", "testbed.curate", "testbed.mixing", "testbed.train",
            "testbed.evaluation", "testbed.rundir"} <= flat
    assert not flat & {"testbed.runs", "testbed.sharing", "testbed.plan", "testbed.gaussian", "testbed.phases"}


# What a report or a sweep's status reads (through the command line): run directories, the registry, the queue.
# None of it needs torch.
LIGHT = sorted(m for m in import_graph() if m.startswith(("testbed.report.", "testbed.toys.")) or m in (
    "testbed.sweep.status", "testbed.sweep.grid", "testbed.sweep.command", "testbed.sweep.sharing",
    "testbed.metrics.registry", "testbed.metrics.phases", "testbed.config", "testbed.cli", "testbed.errors"))


def test_reports_and_sweep_status_load_neither_torch_nor_transformers():
    assert "testbed.report.tables" in LIGHT and "testbed.sweep.status" in LIGHT
    code = (f"import importlib, sys\nfor m in {LIGHT!r}: importlib.import_module(m)\n"
            "print(sorted({'torch', 'transformers', 'accelerate'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
