"""Seeding has one home: every stream a run draws is the run's seed with a named tag."""

import ast
from pathlib import Path

import numpy as np

from testbed import seeding

PACKAGE = Path(__file__).resolve().parents[1] / "testbed"


def test_streams_are_the_published_ones():
    """The tags' values decide every published number: these are the draws of run.seed 0."""
    assert seeding.seed_for(0, 1, seeding.GENERATE) == int(np.random.SeedSequence([0, 1, 1]).generate_state(1)[0])
    assert seeding.rng(0, seeding.MIX).random() == np.random.default_rng([0, 17]).random()
    assert seeding.rng(0, seeding.SPREAD).random() == np.random.default_rng([0, 23]).random()
    assert len({seeding.GENERATE, seeding.TRAIN, seeding.EVAL, seeding.DETECT, seeding.MIX, seeding.SPREAD}) == 6


def test_no_module_makes_a_numpy_generator_of_its_own():
    """Only seeding.py calls np.random.default_rng or SeedSequence with a list (a stream)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "seeding.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("default_rng", "SeedSequence") and node.args \
                    and isinstance(node.args[0], ast.List):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []
