"""The README and docs/*.md against the code: every `testbed ...` command they show is one the CLI parses
(its subcommand and each --flag), every `make TARGET` a target of the Makefile, and they speak to users,
not about how this repository's numbers were produced."""

import argparse
import re

import pytest

from testbed.cli import build_parser

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")  # an inline span may wrap onto the next line
TESTBED = re.compile(r"(?:^|[\s;&|(])(?:testbed|-m testbed\.cli)\s+(.*)")
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+(.*)")
ENDS = {"|", "||", "&&", ";", ">", "#"}  # where the command shown ends and another begins


def code_spans(text: str) -> list[str]:
    """The code of a page, one command line each: the lines of its fenced blocks (comments cut), then its
    inline spans."""
    spans = [line.split(" # ")[0] for block in FENCE.findall(text) for line in block.splitlines()]
    return spans + [" ".join(m.split()) for m in INLINE.findall(FENCE.sub("", text))]


def commands(pattern: re.Pattern) -> list[tuple[str, list[str]]]:
    """(page, words) for each command line of the docs that `pattern` starts, cut where a shell operator or a
    comment starts the next thing."""
    found = []
    for page in DOCS:
        for span in code_spans(page.read_text(encoding="utf-8")):
            m = pattern.search(span)
            if m:
                words = m.group(1).split()
                cut = next((i for i, w in enumerate(words) if w in ENDS), len(words))
                found.append((page.name, words[:cut]))
    return found


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_testbed_command_shown_is_one_the_cli_parses():
    parsers = subparsers()
    shown = commands(TESTBED)
    assert len(shown) > 60  # the pages' commands were found, not none
    wrong = []
    for page, words in shown:
        name = next((w for w in words if not w.startswith("-")), None)
        if name not in parsers:
            wrong.append(f"{page}: testbed {' '.join(words)}: no subcommand {name!r}")
            continue
        accepted = set(parsers[name]._option_string_actions)
        for word in words:
            flag = re.match(r"\[?(--?[A-Za-z][\w-]*)", word)
            if flag and flag.group(1) not in accepted:
                wrong.append(f"{page}: testbed {' '.join(words)}: {flag.group(1)} is not a flag of testbed {name}")
    assert not wrong, "\n".join(wrong)


def test_every_make_target_shown_exists():
    targets = set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))
    shown = commands(MAKE)
    assert len(shown) > 10
    wrong = [f"{page}: make {' '.join(words)}" for page, words in shown
             if next((w for w in words if "=" not in w and not w.startswith("-")), None) not in targets]
    assert not wrong, "\n".join(wrong)


def test_keys_said_to_have_flags_of_the_same_names_have_them():
    """`... the config's sweep.slurm section or the flags of the same names: `a`, `b`; the others are keys only:
    ...`: each key before "keys only" is a flag of testbed sweep."""
    accepted = set(subparsers()["sweep"]._option_string_actions)
    claims = []
    for page in DOCS:
        text = " ".join(page.read_text(encoding="utf-8").split())
        for listed in re.findall(r"flags of the same names: (.*?)(?:keys only|\. )", text):
            claims += [(page.name, key) for key in re.findall(r"`([a-z_]+)`", listed)]
    assert len(claims) >= 12  # the README's list and docs/gpu-cluster.md's
    wrong = [f"{page}: {key} has no flag --{key.replace('_', '-')}" for page, key in claims
             if f"--{key.replace('_', '-')}" not in accepted]
    assert not wrong, "\n".join(wrong)


# How this repository's own numbers came about is not the users' business: the machines, sessions and tools
# of the place where it is written.
WORKPLACE = re.compile(r"\blent\b|\bsessions?\b|device tool|KINDS|carry=|this workplace|here \(online\)", re.I)
SPOKEN = ["README.md", "docs", "configs", "scripts", "testbed", "Makefile", ".ci"]


@pytest.mark.parametrize("where", SPOKEN)
def test_the_repository_speaks_to_its_users(where):
    root = REPO / where
    files = [root] if root.is_file() else [f for f in sorted(root.rglob("*")) if f.is_file()
                                            and f.suffix not in {".png", ".pyc", ".json"}]
    assert files
    found = [f"{f.relative_to(REPO)}:{n}: {line.strip()}" for f in files
             for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if WORKPLACE.search(line)]
    assert not found, "\n".join(found)


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_default_run_s_time_is_stated_once():
    """One figure for each number: the default run's time is the README quick start's; other pages point there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    seconds = re.search(r"took\s+\*\*([\d.]+) s wall\*\*", readme).group(1)
    hits = [p.name for p in PAGES for _ in re.finditer(rf"(?<![\d.]){re.escape(seconds)} s\b",
                                                       p.read_text(encoding="utf-8"))]
    assert hits == ["README.md"]


def test_the_kl_per_word_is_called_an_estimate_everywhere():
    """kl_per_word is a Monte-Carlo estimate over held-out sentences (evaluation.word_metrics), not exact."""
    exact = re.compile(r"exact(ly)?\s+(the\s+)?(KL\b|`kl_per_word`|`KL/word`)"
                       r"|`(kl_per_word|KL/word)`[^.;]{0,40}\b(is|are) exact")
    wrong = [f"{p.name}: {m.group(0)}" for p in PAGES for m in exact.finditer(" ".join(p.read_text().split()))]
    assert not wrong, wrong
