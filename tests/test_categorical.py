import json
import math

import numpy as np
import pytest
from scipy import stats

from testbed.cli import main
from testbed.toys.categorical import (
    exact_loss,
    exact_survival,
    simulate,
    simulated_mean_loss,
    transition,
    truncated_mean_loss,
    zipf,
)


def test_exact_chain_hand_worked():
    # M = 2: from count 1 the next count is Binomial(2, 1/2): 0, 1, 2 with 1/4, 1/2, 1/4.
    assert transition(2)[1].tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert transition(2)[0].tolist() == [1, 0, 0] and transition(2)[2].tolist() == [0, 0, 1]
    # p = 1/2, M = 2: present after 1 generation 3/4; after 2: 1/4 (count 2) + 1/2 * 3/4 (count 1) = 5/8.
    s = exact_survival(np.array([0.5, 0.0]), 2, 2)
    assert s[:, 0].tolist() == pytest.approx([1, 0.75, 0.625]) and s[:, 1].tolist() == [0, 0, 0]
    # Lost with probability 1 - p; given lost: at generation 1 (prob 1/4) or, from count 1, a geometric
    # number of further generations (mean 2): E[T 1{lost}] = 1/4 * 1 + 1/2 * (1/2 (1 + 2)) = 1, so E[T | lost] = 2.
    lost, mean = exact_loss(np.array([0.5]), 2)
    assert lost[0] == pytest.approx(0.5) and mean[0] == pytest.approx(2.0)
    assert zipf(3, 1.0).tolist() == pytest.approx(np.array([1, 1 / 2, 1 / 3]) / (11 / 6))


def test_fundamental_matrix_equals_iterating_the_chain():
    p = np.array([0.2, 0.05, 0.01])
    lost, mean = exact_loss(p, 40)
    survival = exact_survival(p, 40, 3000)  # long enough that nearly every loss has happened
    assert lost == pytest.approx(1 - p, rel=1e-9)  # the frequency is a martingale
    assert 1 - survival[-1] == pytest.approx(lost, rel=1e-6)
    assert truncated_mean_loss(survival) == pytest.approx(mean, rel=1e-6)
    assert stats.binom.pmf(0, 40, 0.01) == pytest.approx(1 - survival[1, 2])


def test_simulation_matches_the_exact_chain():
    r = simulate(outcomes=50, samples=100, generations=30, repeats=4000, exponent=1.1, seed=0)
    exact = exact_survival(r.probs, 100, 30)
    se = r.survival_se(exact)
    assert np.all(np.abs(r.present - exact) <= 4 * se + 1e-12)  # every outcome, every generation, within 4 SE
    assert exact[30, 0] > 0.8 and exact[30, -1] < 0.05  # the head mostly survives, the tail is gone
    # The generation of loss, over the repeats that lost the outcome, against the exact chain given loss by 30.
    sim, want = simulated_mean_loss(r), truncated_mean_loss(exact)
    for i in (9, 29, 49):
        lost = r.lost_at[:, i] > 0
        se_mean = r.lost_at[lost, i].std(ddof=1) / math.sqrt(lost.sum())
        assert abs(sim[i] - want[i]) <= 4 * se_mean, (i, sim[i], want[i], se_mean)


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cat"
    assert main(["categorical", "--outcomes", "20", "--samples", "30", "--generations", "8", "--repeats", "200",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "S8 sim/exact" in printed and "standard errors" in printed
    data = json.loads((out / "categorical.json").read_text())
    assert len(data["survival_exact"]) == 9 and len(data["survival_exact"][0]) == 20
    assert (out / "categorical.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--outcomes", "1"], "--outcomes must be at least 2, got 1"),
    (["--samples", "3000"], "--samples must be at most 2000"),
    (["--generations", "0"], "--generations must be at least 1"),
    (["--zipf", "-1"], "--zipf must be a number >= 0"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert main(["categorical", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
