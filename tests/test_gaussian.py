import numpy as np

from testbed.toys.gaussian import simulate


def test_sample_variance_grows_as_sigma2_times_1_plus_n_over_m():
    """A sample point of generation n has variance sigma^2 (1 + n/M) (Shumailov et al. 2024), whatever mu."""
    r = simulate(samples=5, generations=8, repeats=20000, seed=1, mu=3.0, sigma2=4.0)
    by_hand = 4.0 * np.array([1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6])
    np.testing.assert_allclose(r.closed_form(), by_hand)
    z = (r.point_var - by_hand) / r.point_var_se
    assert np.all(np.abs(z) < 5), z  # within sampling error at every generation
    assert np.all(r.point_var_se < 0.1 * by_hand)  # ... an error small enough to tell 1 + n/M from 1 + n/(M-1)
    assert abs(r.fitted_var[0].mean() - 4.0) < 0.1  # generation 0 fits the true sigma^2


def test_fitted_variance_is_unbiased_but_its_median_collapses():
    r = simulate(samples=10, generations=30, repeats=20000, seed=2)
    means = r.fitted_var.mean(axis=1)
    assert np.all(np.abs(means[:10] - 1) < 0.05)
    medians = np.median(r.fitted_var, axis=1)
    assert medians[30] < 0.1 * medians[0]
    assert np.all(np.diff(medians[::5]) < 0)
