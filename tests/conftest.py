"""Shared fixtures: everything offline, tiny models and corpora written by the tests."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MKL_CBWR", "AUTO")  # as runs set it (model.reproducible_cpu), here before any MKL call

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from testbed import config  # noqa: E402

from .helpers import REPO, TINY  # noqa: E402

# Subprocesses (python -m testbed.cli, accelerate launch) import this checkout's testbed, not an installed one.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    return [*TINY, f"run.out_dir={tmp_path / 'runs'}"]


@pytest.fixture
def tiny_cfg(tiny_overrides: list[str]) -> config.Config:
    return config.load(None, tiny_overrides)


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    """A directory with train/valid/test.txt of plain English-like lines."""
    root = tmp_path / "corpus"
    root.mkdir()
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "dogs", "ran", "past", "quiet", "old", "houses",
             "near", "green", "fields"]
    for split, n in (("train", 120), ("valid", 20), ("test", 20)):
        lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(n)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def bpe_blocks():
    """A 300-token BPE and 32 blocks of 16 of its tokens, from one repeated English-like line: enough for a
    training step on a tiny model."""
    import numpy as np

    from testbed.model import train_bpe

    lines = ["the cat sat on the mat and the dog ran far away"] * 50
    tok = train_bpe(lines, 300)
    return tok, np.array(tok(" ".join(lines))["input_ids"][: 64 * 8]).reshape(-1, 16)


@pytest.fixture(scope="session")
def one_generation_run(tmp_path_factory) -> Path:
    """A finished TINY run of generations 0 and 1, for the tests that compare a variant with it (read only)."""
    from testbed.cli import main

    out = tmp_path_factory.mktemp("one-generation")
    assert main(["run", *TINY, "run.generations=1", f"run.out_dir={out}", "run.name=one"]) == 0
    return out / "one"
