import math

import numpy as np
import pytest

from testbed.evaluation import bootstrap_noise


def test_bootstrap_noise_is_the_std_over_resamples():
    x = np.array([0.0, 1.0] * 100)
    noise = bootstrap_noise(len(x), {"mean": lambda b: x[b].mean(), "const": lambda b: 3.0,
                                     "nan": lambda b: math.nan}, seed=0, resamples=400)
    assert noise["noise_mean"] == pytest.approx(math.sqrt(0.25 / 200), rel=0.15)  # the binomial standard error
    assert noise["noise_const"] == 0.0 and math.isnan(noise["noise_nan"])
    again = bootstrap_noise(len(x), {"mean": lambda b: x[b].mean()}, seed=0, resamples=400)
    assert again["noise_mean"] == noise["noise_mean"]  # seeded: a resumed run gets the same band
