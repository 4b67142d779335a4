"""What every figure shares, and the metrics grid's choice of panels."""

import numpy as np

from testbed.metrics.registry import BY_KEY
from testbed.report import figures
from testbed.report.plotting import tick_label
from testbed.report.runs import Run


def test_tick_labels_have_one_format():
    assert [tick_label(v) for v in (0, 0.25, 1, 50, 2000, 1e4, 3e7, 5e-4)] == [
        "0", "0.25", "1", "50", "2000", "10⁴", "3·10⁷", "5·10⁻⁴"]


def test_histogram_density_is_per_decade():
    """Areas on the log axis are shares: the density times each bin's width in decades sums to 1."""
    edges = np.geomspace(1, 1000, 13)
    values = np.random.default_rng(0).lognormal(3, 1, 500).clip(1, 999)
    density = figures._log_density(values, edges)
    assert np.isclose(np.sum(density * np.diff(np.log10(edges))), 1.0)
    # one value in a bin 3/4 of a decade wide: density 4/3 per decade
    assert np.isclose(figures._log_density(np.array([5.0]), np.array([1.0, 10 ** 0.25, 10.0]))[1], 1 / 0.75)


def _run(seed: int, values: list[float]) -> Run:
    return Run(None, {"run.seed": seed}, [{"generation": g, "distinct_2": v} for g, v in enumerate(values)], {})


def test_panels_that_show_nothing_are_recognised():
    m = BY_KEY["distinct_2"]
    apart = {"a": [_run(0, [0.8, 0.7]), _run(1, [0.82, 0.72])], "b": [_run(0, [0.8, 0.5]), _run(1, [0.82, 0.52])]}
    over = {"a": [_run(0, [0.8, 0.7]), _run(1, [0.82, 0.74])], "b": [_run(0, [0.8, 0.73]), _run(1, [0.82, 0.76])]}
    assert not figures.indistinct(m, apart) and figures.indistinct(m, over)
    assert not figures.indistinct(m, {"a": over["a"]})  # one setting: nothing to tell apart
    assert figures.constant(m, [_run(0, [0.0, 0.0]), _run(1, [0.0, 0.0])])
    assert not figures.constant(m, over["a"])
