"""The Gaussian refit toy (Shumailov et al. 2024, theory): fit a normal to M samples with the unbiased
mean and variance estimators, draw M new samples from the fit, repeat.

Closed forms: a sample point of generation n has variance sigma^2 (1 + n/M); each fitted variance is
unbiased (its mean stays sigma^2), yet its median falls and the fitted sigma_n goes to 0 almost surely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Refit:
    samples: int
    sigma2: float
    fitted_var: np.ndarray  # (generations + 1, repeats): the variance fitted at each generation
    point_var: np.ndarray  # (generations + 1,): variance of a sample point of generation n, over repeats
    point_var_se: np.ndarray  # its standard error (from the fourth moment)

    def closed_form(self) -> np.ndarray:
        n = np.arange(len(self.point_var))
        return self.sigma2 * (1 + n / self.samples)


def simulate(samples: int, generations: int, repeats: int, seed: int = 0, mu: float = 0.0,
             sigma2: float = 1.0) -> Refit:
    """Run `repeats` independent chains of `generations` refits at once (vectorised over chains)."""
    if samples < 2 or generations < 0 or repeats < 2:
        raise ValueError("need samples >= 2, generations >= 0 and repeats >= 2")
    rng = np.random.default_rng(seed)
    x = rng.normal(mu, np.sqrt(sigma2), size=(repeats, samples))
    fitted = np.empty((generations + 1, repeats))
    point_var = np.empty(generations + 1)
    point_se = np.empty(generations + 1)
    for n in range(generations + 1):
        # Over repeats, every column is a sample point of generation n; average their variances.
        centred = x - x.mean(axis=0)
        var = (centred**2).sum(axis=0) / (repeats - 1)
        fourth = (centred**4).mean(axis=0)
        point_var[n] = var.mean()
        point_se[n] = np.sqrt(np.mean((fourth - var**2) / repeats))
        mean, fitted[n] = x.mean(axis=1), x.var(axis=1, ddof=1)
        x = mean[:, None] + np.sqrt(fitted[n])[:, None] * rng.standard_normal((repeats, samples))
    return Refit(samples, sigma2, fitted, point_var, point_se)


def table(r: Refit) -> str:
    q = np.percentile(r.fitted_var, [5, 50, 95], axis=1)
    lines = [f"{'gen':>4} {'Var(x_n) sim':>13} {'σ²(1+n/M)':>10} {'fitted σ² mean':>15} {'median':>8} "
             f"{'p05':>8} {'p95':>8}"]
    for n in range(len(r.point_var)):
        lines.append(f"{n:>4} {r.point_var[n]:>13.4f} {r.closed_form()[n]:>10.4f} {r.fitted_var[n].mean():>15.4f} "
                     f"{q[1, n]:>8.4f} {q[0, n]:>8.4f} {q[2, n]:>8.4f}")
    return "\n".join(lines)


def plot(r: Refit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.arange(len(r.point_var))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.errorbar(n, r.point_var, yerr=2 * r.point_var_se, fmt="o", ms=3, label="simulated (±2 SE)")
    a.plot(n, r.closed_form(), "k--", label="σ²(1 + n/M)")
    a.set(xlabel="generation n", ylabel="variance", title="Variance of a sample point of generation n")
    a.legend()
    a.grid(alpha=0.3)
    q = np.percentile(r.fitted_var, [5, 25, 50, 75, 95], axis=1)
    b.fill_between(n, q[0], q[4], alpha=0.2, label="5–95%")
    b.fill_between(n, q[1], q[3], alpha=0.35, label="25–75%")
    b.plot(n, q[2], label="median")
    b.plot(n, r.fitted_var.mean(axis=1), "k:", label="mean (unbiased: stays σ²)")
    b.set_yscale("log")
    b.set(xlabel="generation n", ylabel="fitted σ²", title=f"Fitted variance over {r.fitted_var.shape[1]} repeats "
          f"(M = {r.samples})")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(samples: int, generations: int, repeats: int, seed: int, out: Path) -> Refit:
    """Simulate, print the table, write gaussian.json and gaussian.png into `out`."""
    r = simulate(samples, generations, repeats, seed)
    print(table(r))
    out.mkdir(parents=True, exist_ok=True)
    q = np.percentile(r.fitted_var, [5, 50, 95], axis=1)
    (out / "gaussian.json").write_text(json.dumps({
        "samples": samples, "generations": generations, "repeats": repeats, "seed": seed,
        "point_var": r.point_var.tolist(), "point_var_se": r.point_var_se.tolist(),
        "closed_form": r.closed_form().tolist(), "fitted_var_mean": r.fitted_var.mean(axis=1).tolist(),
        "fitted_var_p05": q[0].tolist(), "fitted_var_median": q[1].tolist(), "fitted_var_p95": q[2].tolist(),
    }, indent=2))
    plot(r, out / "gaussian.png")
    print(f"wrote {out / 'gaussian.json'} and {out / 'gaussian.png'}")
    return r
