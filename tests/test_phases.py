import math
from pathlib import Path

import pytest

from testbed.metrics.phases import first_generations, left_band, phase, phases, row_band, seed_band
from testbed.report.runs import Run, group_settings
from testbed.report.tables import phase_table

ROW0 = {"generation": 0, "tail_coverage": 0.5, "tail_token_mass": 0.2, "tail_mass_lost": 0.1, "ppl_human_tail": 80.0,
        "ppl_human_head": 10.0, "grammatical_rate": 0.9, "loglik_std_gen0": 0.6, "entropy": 7.0, "distinct_2": 0.8}
BAND = {k: 0.05 for k in ROW0 if k != "generation"} | {"ppl_human_tail": 5.0, "ppl_human_head": 1.0}


def moved(**values) -> dict:
    return {**ROW0, "generation": 1, **values}


def test_phase_rule_on_hand_built_rows():
    assert phase(ROW0, ROW0, BAND) == "none"
    assert phase(moved(tail_coverage=0.44), ROW0, BAND) == "early"  # fell by 0.06 > 0.05
    assert phase(moved(tail_coverage=0.46), ROW0, BAND) == "none"  # by 0.04: inside the band
    assert phase(moved(ppl_human_tail=86.0), ROW0, BAND) == "early"
    assert phase(moved(tail_mass_lost=0.2), ROW0, BAND) == "early"
    # The head moved too, but the distribution has not narrowed: still early.
    assert phase(moved(tail_coverage=0.3, ppl_human_head=12.0), ROW0, BAND) == "early"
    # Head and variance: late (with or without a tail signal).
    assert phase(moved(tail_coverage=0.3, ppl_human_head=12.0, entropy=6.0), ROW0, BAND) == "late"
    assert phase(moved(grammatical_rate=0.7, distinct_2=0.5), ROW0, BAND) == "late"
    # Moves in the direction of health do not count: more tail, lower perplexity, more entropy.
    healthier = moved(tail_coverage=0.9, ppl_human_tail=50.0, ppl_human_head=5.0, entropy=9.0)
    assert phase(healthier, ROW0, BAND) == "none"
    assert left_band(moved(tail_coverage=0.3, entropy=6.97, distinct_2=0.7), ROW0, BAND) == {"tail_coverage",
                                                                                              "distinct_2"}


def test_missing_or_nan_signals_do_not_count():
    assert phase(moved(tail_coverage=None), ROW0, BAND) == "none"
    assert phase(moved(tail_coverage=0.1), ROW0, {}) == "none"  # no band: the signal is not judged
    assert phase(moved(ppl_human_tail=math.nan), ROW0, BAND) == "none"
    assert phase({"generation": 1, "tail_coverage": 0.1}, {"generation": 0, "tail_coverage": 0.5}, BAND) == "early"


def test_phases_of_a_run_and_their_first_generations():
    rows = [ROW0, moved(), {**moved(tail_coverage=0.3), "generation": 2},
            {**moved(tail_coverage=0.2, ppl_human_head=13.0, loglik_std_gen0=0.3), "generation": 3},
            {**moved(), "generation": 4}]  # healed: back inside the band
    labels = phases(rows, BAND)
    assert labels == ["none", "none", "early", "late", "none"]
    assert first_generations([0, 1, 2, 3, 4], labels) == {"early": 2, "late": 3}
    assert first_generations([0, 1, 2], ["none", "late", "late"]) == {"early": 1, "late": 1}  # late implies early
    assert first_generations([0, 1], ["none", "none"]) == {"early": None, "late": None}


def test_bands_hand_worked():
    assert row_band({"noise_entropy": 0.1, "noise_distinct_2": None, "noise_unrelated": 1.0}) == {"entropy": 0.2}
    assert row_band({"noise_entropy": 0.1}, sigmas=3.0) == {"entropy": pytest.approx(0.3)}
    band = seed_band([{"entropy": 1.0, "distinct_2": 0.5}, {"entropy": 3.0}], sigmas=2.0)
    assert band == {"entropy": pytest.approx(2 * math.sqrt(2))}  # sample std of 1 and 3; distinct_2 has one value


def test_report_phase_table_first_generations():
    def run(label: str, seed: int, tail: list[float], head: list[float], entropy: list[float]) -> Run:
        rows = [{"generation": g, "tail_coverage": t, "ppl_human_head": h, "entropy": e}
                for g, (t, h, e) in enumerate(zip(tail, head, entropy))]
        return Run(Path(f"sweep/mixing.strategy={label},run.seed={seed}"), {"mixing.strategy": label,
                                                                            "run.seed": seed}, rows, {})
    # Generation 0 across all four runs: tail 0.5, 0.6, 0.5, 0.6 (std 0.0577, band 0.115); head 10, 10.2, ...
    runs = [run("replace", 0, [0.5, 0.45, 0.2, 0.1], [10.0, 10.0, 10.1, 14.0], [7.0, 7.0, 7.0, 5.0]),
            run("replace", 1, [0.6, 0.55, 0.3, 0.2], [10.2, 10.2, 10.3, 14.2], [7.2, 7.2, 7.2, 5.2]),
            run("accumulate", 0, [0.5, 0.5, 0.5, 0.5], [10.0, 10.0, 10.0, 10.0], [7.0, 7.0, 7.0, 7.0]),
            run("accumulate", 1, [0.6, 0.6, 0.6, 0.6], [10.2, 10.2, 10.2, 10.2], [7.2, 7.2, 7.2, 7.2])]
    lines = phase_table(group_settings(runs), runs)
    assert "| replace | 2 | 3 | none none early late |" in lines
    assert "| accumulate | - | - | none none none none |" in lines
    assert phase_table(group_settings(runs[:1]), runs[:1])[-1].endswith("| none none none none |")  # no noise_*
    assert phase_table({"x": [Run(Path("r"), {}, [{"generation": 0, "ppl_human": 3.0}], {})]}, []) == []
