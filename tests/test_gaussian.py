import numpy as np

from testbed.gaussian import simulate


def test_sample_variance_follows_the_closed_form():
    r = simulate(samples=10, generations=12, repeats=20000, seed=1)
    z = (r.point_var - r.closed_form()) / r.point_var_se
    assert np.all(np.abs(z) < 5), z  # sigma^2 (1 + n/M) within sampling error at every generation
    assert r.closed_form()[10] == 2.0  # 1 + 10/10
    assert r.point_var[12] > 1.8  # and it really grew


def test_fitted_variance_is_unbiased_but_its_median_collapses():
    r = simulate(samples=10, generations=30, repeats=20000, seed=2)
    means = r.fitted_var.mean(axis=1)
    assert np.all(np.abs(means[:10] - 1) < 0.05)
    medians = np.median(r.fitted_var, axis=1)
    assert medians[30] < 0.1 * medians[0]
    assert np.all(np.diff(medians[::5]) < 0)
