"""Runs as reports read them: each computed generation counts once in the seed band, whether a setting took it
from a shared prefix or computed the same thing again."""

import math
from pathlib import Path

import numpy as np
import pytest

from testbed.metrics import phases, registry
from testbed.report import runs
from testbed.report.tables import early_warning, phase_table

from .helpers import fake_run

SETTINGS = [{"name": f"heal from {k}", "mixing.strategy": "replace", "run.prefix_until": k} for k in (1, 2, 3)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Three settings x two seeds whose generation 0 is the same computation in every setting of a seed (a
    shared prefix): ppl_human 10 (seed 0) and 12 (seed 1) there, then settings apart."""
    root = tmp_path_factory.mktemp("shared")
    for i, setting in enumerate(SETTINGS):
        for seed, ppl0 in ((0, 10.0), (1, 12.0)):
            rows = [{"generation": 0, "ppl_human": ppl0, "tail_coverage": 0.5 + 0.01 * seed},
                    *({"generation": g, "ppl_human": ppl0 * (1 + g * (i + 1)), "tail_coverage": 0.5 - 0.1 * g}
                      for g in (1, 2))]
            values = {"mixing.strategy": "replace", "run.prefix_until": setting["run.prefix_until"], "run.seed": seed}
            fake_run(root, f"s{i},seed={seed}", values, rows, SETTINGS)
    return root


def test_each_computed_generation_counts_once(shared: Path):
    found = runs.find_runs([shared])
    assert len(found) == 6 and len(runs.computed_rows(found, 0)) == 2
    # std of [10, 12] (ddof 1) = sqrt(2); counting the 3 copies of each would give sqrt(6 * 1 / 5) = 1.095
    assert runs.seed_sigma(found, "ppl_human") == pytest.approx(math.sqrt(2))
    assert runs.noise_band(found, found[:2])["tail_coverage"] == pytest.approx(
        phases.NOISE_SIGMAS * np.std([0.5, 0.51], ddof=1))
    assert len(runs.computed_rows(found, 1)) == 6  # later generations differ between settings


def test_tables_read_the_deduplicated_band(shared: Path):
    found = runs.find_runs([shared])
    groups = runs.group_settings(found)
    warning = "\n".join(early_warning(groups, found))
    assert "| `ppl_human` | 1.41 |" in warning  # sigma sqrt(2), not 1.1
    assert "| `tail_coverage` | 0.00707 |" in warning
    assert "heal from 1" in "\n".join(phase_table(groups, found))


def test_phase_signals_come_from_the_registry():
    """Roles and directions of damage, as the phase rule defines them, read from the registry."""
    assert phases.TAIL == {"ppl_human_tail": +1, "tail_coverage": -1, "tail_mass_lost": +1, "tail_token_mass": -1}
    assert phases.HEAD == {"ppl_human_head": +1, "grammatical_rate": -1}
    assert phases.VARIANCE == {"distinct_2": -1, "entropy": -1, "loglik_std_gen0": -1}
    assert [m.key for m in registry.shown_in(registry.RECOVERY_PLOT)] == [
        "ppl_human", "ppl_human_tail", "tail_coverage", "grammatical_rate"]



def test_a_key_added_later_holds_its_default_in_older_runs(tmp_path: Path):
    """A run made before run.portable_numerics existed and one made after (false, its default) are one setting;
    a value other than the default still tells them apart."""
    rows = [{"generation": 0, "ppl_human": 10.0}]
    fake_run(tmp_path, "old", {"mixing.strategy": "replace", "run.seed": 0}, rows)
    fake_run(tmp_path, "new", {"mixing.strategy": "replace", "run.seed": 1, "run.portable_numerics": False}, rows)
    assert runs.differing_keys(runs.find_runs([tmp_path])) == []
    fake_run(tmp_path, "other", {"mixing.strategy": "replace", "run.seed": 2, "run.portable_numerics": True}, rows)
    assert runs.differing_keys(runs.find_runs([tmp_path])) == ["run.portable_numerics"]


def test_a_run_belongs_to_the_setting_that_sets_values_away_from_the_defaults(tmp_path: Path):
    """A schedule run has the default strategy (replace), so it matches a setting naming that strategy too;
    it belongs to the setting that gives its schedule."""
    heal = [{"from_generation": 2, "strategy": "fixed_fraction", "human_fraction": 1.0}]
    settings = [{"name": "replace", "mixing.strategy": "replace"}, {"name": "heal", "mixing.schedule": heal}]
    rows = [{"generation": 0, "ppl_human": 10.0}]
    for seed in (0, 1):
        fake_run(tmp_path, f"replace,{seed}", {"mixing.strategy": "replace", "run.seed": seed}, rows, settings)
        fake_run(tmp_path, f"heal,{seed}", {"mixing.strategy": "replace", "mixing.schedule": heal, "run.seed": seed},
                 rows, settings)
    groups = runs.group_settings(runs.find_runs([tmp_path]))
    assert {label: sorted(r.path.name for r in rs) for label, rs in groups.items()} == {
        "replace": ["replace,0", "replace,1"], "heal": ["heal,0", "heal,1"]}
