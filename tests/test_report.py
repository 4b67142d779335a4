"""The report over run directories written by hand (nothing is run): the metric registry feeds every table
and plot, settings get short names, bands stay inside what a metric can take."""

import re
from pathlib import Path

import numpy as np
import pytest

from testbed.metrics import registry
from testbed.metrics.registry import Metric
from testbed.report import figures, runs
from testbed.report import tables as report

from .helpers import fake_run

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"

SETTINGS = [{"mixing.strategy": "replace"},
            {"mixing.strategy": "replace", "curate.dedup": "minhash"},
            {"mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.5, "generation.watermark.enabled": True,
             "curate.detector": "watermark"},
            {"name": "keep half", "mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.5}]
DEFAULTS = {"mixing.strategy": "replace", "mixing.human_fraction": 0.1, "curate.dedup": "none",
            "curate.detector": "none", "generation.watermark.enabled": False}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Four settings x two seeds; distinct_2 near 1 with a large seed spread, ppl_human over decades."""
    root = tmp_path_factory.mktemp("report")
    for i, setting in enumerate(SETTINGS):
        values = {**DEFAULTS, **{k: v for k, v in setting.items() if k != "name"}}
        for seed in (0, 1):
            rows = [{"generation": g, "ppl_human": 30.0 * 10 ** (g * (i + 1) / 4), "distinct_2": [0.99, 0.6][seed],
                     "brand_new": float(g)} for g in range(3)]
            fake_run(root, f"s{i},run.seed={seed}", {**values, "run.seed": seed}, rows, SETTINGS)
    return root


def test_settings_get_their_name_or_their_values_short(sweep: Path):
    groups = runs.group_settings(runs.find_runs([sweep]))
    assert list(groups) == ["replace", "replace, minhash", "fixed_fraction, human_fraction=0.5, watermark",
                            "keep half"]
    assert all(len(rs) == 2 for rs in groups.values())


def test_bands_stay_inside_the_metric_and_perplexity_is_logarithmic(sweep: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = runs.find_runs([sweep])
    groups = runs.group_settings(found)
    fig, (a, b) = plt.subplots(1, 2)
    figures.metric_panel(a, registry.BY_KEY["distinct_2"], figures.Column("", groups, {}), found)
    figures.metric_panel(b, registry.BY_KEY["ppl_human"], figures.Column("", groups, {}), found)
    bands = [p.get_paths()[0].vertices[:, 1] for p in a.collections]
    assert len(bands) == 4 and all(v.min() >= 0.6 - 1e-9 and v.max() <= 0.99 + 1e-9 for v in bands)  # seeds' range
    # A t-interval over these two seeds (mean 0.795, half-width 12.7 x 0.276) would run far beyond [0, 1].
    assert b.get_yscale() == "log" and a.get_yscale() == "linear"
    assert [line.get_label() for line in a.lines] == [*groups, "human text"]
    plt.close(fig)
    clipped = Metric("x", "X", "share", True, (), low=0.0, high=1.0).clip(np.array([-0.5, 0.5, 1.5]))
    assert clipped.tolist() == [0.0, 0.5, 1.0]


def test_a_new_metric_is_one_entry(sweep: Path, monkeypatch, tmp_path: Path):
    """Registering `brand_new` puts it in the terminal table, report.md, the early-warning table and the plots."""
    new = Metric("brand_new", "A brand-new metric", "units", True,
                 (registry.TERMINAL, registry.REPORT, registry.SUMMARY, registry.SIGNAL), "{:.1f}", "new!")
    monkeypatch.setattr(registry, "METRICS", [*registry.METRICS, new])
    found = runs.find_runs([sweep])
    table = report.format_table(found[0].rows)
    assert table.splitlines()[0].split() == ["gen", "ppl_human", "dist-2", "new!"]
    assert table.splitlines()[-1].split()[-1] == "2.0"
    md = report.markdown(runs.group_settings(found), found)
    assert "## A brand-new metric" in md and "`brand_new`, units (higher is better)." in md
    assert re.search(r"\| `brand_new` \| 0 \|", md)  # early warning: sigma 0 at generation 0
    assert "| setting | `ppl_human` | `distinct_2` | `brand_new` |" in md  # the summary
    assert [m.key for m in figures.present(registry.REPORT, found)] == ["ppl_human", "distinct_2", "brand_new"]


def test_every_registered_metric_is_in_the_reference_key_table():
    """docs/reference.md's `metrics.jsonl keys` table names every registered key (`a_b` / `_c` names a_c too)."""
    text = REFERENCE.read_text(encoding="utf-8").split("### `metrics.jsonl` keys")[1].split("\n## ")[0]
    named = set()
    for line in text.splitlines():
        cell = line.split("|")[1] if line.startswith("|") else ""
        last = None
        for token in re.findall(r"`([^`]+)`", cell):
            if token.startswith("_") and last:
                named.add(last.rsplit("_", 1)[0] + token)
            else:
                named.add(token)
                last = token
    missing = [m.key for m in registry.METRICS if m.key not in named]
    assert not missing, f"registered but not in docs/reference.md's key table: {missing}"


def test_out_of_domain_table_pairs_each_run_with_the_control_of_its_seed(tmp_path: Path):
    """ppl_other: seed 0's control forgets (40 -> 52), seed 1's does not; the healed run doubles the control's
    perplexity at k = 1 in both seeds, and is back on the control by the end in seed 0 (all of the excess
    given back) but at x1.5 in seed 1 (1 - log 1.5 / log 2 = 41.5%)."""
    from testbed.report.recovery import out_of_domain_table
    from testbed.report.runs import find_runs, group_settings

    heal = [{"from_generation": 2, "strategy": "fixed_fraction", "human_fraction": 1.0}]
    settings = [{"name": "human-only", "mixing.strategy": "fixed_fraction", "mixing.human_fraction": 1.0},
                {"name": "heal-k1", "mixing.strategy": "replace", "mixing.schedule": heal}]
    values = {0: {"human-only": [40, 44, 48, 52], "heal-k1": [40, 88, 60, 52]},
              1: {"human-only": [40, 40, 40, 40], "heal-k1": [40, 80, 60, 60]}}
    for seed, by_setting in values.items():
        for s in settings:
            rows = [{"generation": g, "ppl_other": v, **({"ppl_other_zero_shot": 30.0} if g == 0 else {})}
                    for g, v in enumerate(by_setting[s["name"]])]
            config = {k: v for k, v in s.items() if k != "name"} | {"run.seed": seed, "eval.corpora.other": "builtin:1"}
            fake_run(tmp_path, f"{s['name']},seed={seed}", config, rows, settings)
    runs = find_runs([tmp_path])
    table = "\n".join(out_of_domain_table(group_settings(runs), runs))
    row = next(line for line in table.splitlines() if line.startswith("| heal-k1 | 1 | `ppl_other` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # base, gen 0, at k, control at k, beyond control at k, healed, beyond control healed, given back
    assert cells[3:] == ["30.00 ± 0.00", "40.00 ± 0.00", "84.00 ± 5.66", "42.00 ± 2.83", "×2.00 (±0.00 in log)",
                         "56.00 ± 5.66", "×1.22 (±0.29 in log)", "71% ± 41%"]
    assert "| human-only |" not in table  # the control is the reference, not a row
