"""The categorical refit toy: rare events vanish first, exactly.

A Zipf-distributed categorical distribution over V outcomes is refitted each generation to the empirical
frequencies of M samples drawn from the previous fit (generation 0 is the Zipf law itself). An outcome that
draws no sample gets probability 0 and never comes back.

Each outcome's count is a Markov chain on 0..M: the first count is Binomial(M, p) and then
count' ~ Binomial(M, count / M) (the marginal of the multinomial draw). So its survival after k generations,
P(count_k > 0), is exact from the (M+1) x (M+1) transition matrix; and from its fundamental matrix, the
probability that the outcome is lost (1 - p: the frequency is a martingale, and the other end, count M, is
the outcome taking all the mass) and the mean number of generations until it is lost, given that it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

MAX_SAMPLES = 2000  # the exact chain inverts an (M - 1) x (M - 1) matrix


def zipf(outcomes: int, exponent: float) -> np.ndarray:
    """p_r proportional to r^-exponent over ranks r = 1..outcomes."""
    p = np.arange(1, outcomes + 1, dtype=float) ** -exponent
    return p / p.sum()


def transition(samples: int) -> np.ndarray:
    """(M+1, M+1): T[a, b] = P(count' = b | count = a) = Binomial(M, a / M) at b."""
    m = samples
    return stats.binom.pmf(np.arange(m + 1)[None, :], m, np.arange(m + 1)[:, None] / m)


def exact_survival(p: np.ndarray, samples: int, generations: int) -> np.ndarray:
    """(generations + 1, len(p)): P(count_k > 0) for k = 0..generations of outcomes of initial probability p
    (generation 0: the true law, present wherever p > 0).

    Backwards, so that the work is one (M+1)-vector per generation: u_k[c] = P(count is 0 k - 1 generations
    after it was c), u_1 = e_0, u_{k+1} = T u_k; then P(count_k = 0) = sum_c Binomial(M, p)[c] u_k[c].
    """
    p = np.asarray(p, dtype=float)
    t = transition(samples)
    u = np.zeros((samples + 1, generations))
    u[0, 0] = 1.0
    for k in range(1, generations):
        u[:, k] = t @ u[:, k - 1]
    first = stats.binom.pmf(np.arange(samples + 1)[None, :], samples, p[:, None])  # (outcomes, M+1)
    return np.vstack([(p > 0).astype(float), 1.0 - (first @ u).T])


def exact_loss(p: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """P(lost) and E[generations until lost | lost] of outcomes of initial probability p (0 < p < 1), from
    the fundamental matrix N = (I - Q)^-1 of the transient counts 1..M-1.

    With h(c) = P(absorbed at 0 | count c), E_c[T 1{lost}] = sum_b N[c, b] h(b) counts the generations spent
    in transient states on the way to 0; generation 1 draws the first count from Binomial(M, p).
    """
    m = samples
    p = np.asarray(p, dtype=float)
    t = transition(m)
    n = np.linalg.inv(np.eye(m - 1) - t[1:m, 1:m])
    h = np.zeros(m + 1)
    h[0] = 1.0
    h[1:m] = n @ t[1:m, 0]
    g = np.zeros(m + 1)  # E_c[T' 1{lost}], generations after the first count
    g[1:m] = n @ h[1:m]
    first = stats.binom.pmf(np.arange(m + 1)[None, :], m, p[:, None])
    lost = first @ h
    return lost, (first @ (h + g)) / lost


@dataclass
class Refit:
    probs: np.ndarray  # (V,) the Zipf law, by rank
    samples: int
    present: np.ndarray  # (generations + 1, V): share of repeats in which outcome r is still present
    lost_at: np.ndarray  # (repeats, V): generation at which it was lost, -1 if present at the end

    @property
    def repeats(self) -> int:
        return self.lost_at.shape[0]

    @property
    def generations(self) -> int:
        return self.present.shape[0] - 1

    def survival_se(self, exact: np.ndarray) -> np.ndarray:
        """The simulation's standard error of each survival share, sqrt(S (1 - S) / R) at the exact S."""
        return np.sqrt(exact * (1 - exact) / self.repeats)


def simulate(outcomes: int, samples: int, generations: int, repeats: int, exponent: float,
             seed: int = 0) -> Refit:
    """`repeats` independent chains at once: each generation one multinomial draw of M per chain."""
    rng = np.random.default_rng(seed)
    probs = zipf(outcomes, exponent)
    fit = np.broadcast_to(probs, (repeats, outcomes))
    present = np.empty((generations + 1, outcomes))
    present[0] = 1.0
    lost_at = np.full((repeats, outcomes), -1)
    for k in range(1, generations + 1):
        counts = rng.multinomial(samples, fit)
        fit = counts / samples
        alive = counts > 0
        present[k] = alive.mean(axis=0)
        lost_at[(lost_at < 0) & ~alive] = k
    return Refit(probs, samples, present, lost_at)


def truncated_mean_loss(survival: np.ndarray) -> np.ndarray:
    """E[generation lost | lost by the last generation] from survival curves (generations + 1, outcomes):
    what a simulation of that many generations can measure; NaN where nothing is lost."""
    lost_at_k = -np.diff(survival, axis=0)  # P(lost at generation k), k = 1..
    k = np.arange(1, len(survival))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (k * lost_at_k).sum(axis=0) / lost_at_k.sum(axis=0)


def simulated_mean_loss(r: Refit) -> np.ndarray:
    """Per outcome, the mean generation of loss over the repeats that lost it; NaN where none did."""
    lost = r.lost_at > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lost, r.lost_at, 0).sum(axis=0) / lost.sum(axis=0)


def report_ranks(outcomes: int) -> np.ndarray:
    """Ranks shown in the table and plot: 1, 2, 5, 10, 20, 50, ... up to V (V included), 0-based."""
    ranks = [r for d in (1, 10, 100, 1000, 10000, 100000) for r in (d, 2 * d, 5 * d) if r < outcomes]
    return np.array([*ranks, outcomes]) - 1


def report_generations(generations: int) -> list[int]:
    return sorted({k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500) if k <= generations} | {generations})


def table(r: Refit, exact: np.ndarray, lost_p: np.ndarray, mean_loss: np.ndarray) -> str:
    gens = report_generations(r.generations)
    lines = [f"{'rank':>6} {'p':>9} " + " ".join(f"{'S' + str(k) + ' sim/exact':>17}" for k in gens)
             + f" {'P(lost)':>8} {'E[gen lost|lost]':>16}"]
    for i in report_ranks(len(r.probs)):
        cells = " ".join(f"{r.present[k, i]:>8.4f}/{exact[k, i]:<8.4f}" for k in gens)
        lines.append(f"{i + 1:>6} {r.probs[i]:>9.2e} {cells} {lost_p[i]:>8.4f} {mean_loss[i]:>16.2f}")
    return "\n".join(lines)


def plot(r: Refit, exact: np.ndarray, mean_loss: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = np.arange(1, len(r.probs) + 1)
    gens = report_generations(r.generations)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(gens)))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.4))
    for color, k in zip(colors, gens):
        a.plot(ranks, exact[k], color=color, lw=1.5, label=f"k = {k}")
        a.plot(ranks, r.present[k], "o", color=color, ms=2.5, alpha=0.6)
    a.plot([], [], "k-", lw=1.5, label="exact chain (lines)")
    a.plot([], [], "ko", ms=2.5, label="simulated (dots)")
    a.set_xscale("log")
    a.set_ylim(-0.02, 1.02)
    a.set(xlabel="rank of the outcome (Zipf, 1 = most probable)", ylabel="P(still present after k generations)",
          title=f"Survival by rank and generation (V = {len(r.probs)}, M = {r.samples}, {r.repeats} repeats)")
    a.legend(fontsize=8, loc="lower left")
    a.grid(alpha=0.3)
    sim = simulated_mean_loss(r)
    trunc = truncated_mean_loss(exact)
    b.plot(r.probs, mean_loss, "k-", lw=1.5, label="exact, E[generations until lost | lost]")
    b.plot(r.probs, trunc, "--", color="tab:blue", lw=1, label=f"exact, given lost by k = {r.generations}")
    b.plot(r.probs, sim, "o", color="tab:blue", ms=2.5, alpha=0.6, label=f"simulated (lost by k = {r.generations})")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set(xlabel="initial probability p of the outcome", ylabel="generations",
          title="Mean generations until an outcome is lost")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(outcomes: int, samples: int, generations: int, repeats: int, exponent: float, seed: int,
        out: Path) -> Refit:
    """Simulate, compute the exact chain, print the table, write categorical.json and categorical.png."""
    r = simulate(outcomes, samples, generations, repeats, exponent, seed)
    exact = exact_survival(r.probs, samples, generations)
    lost_p, mean_loss = exact_loss(r.probs, samples)
    print(table(r, exact, lost_p, mean_loss))
    z = np.abs(r.present - exact) / np.maximum(r.survival_se(exact), 1e-12)
    print(f"largest |simulated - exact| survival over all {outcomes} outcomes x {generations} generations: "
          f"{np.abs(r.present - exact).max():.4f} ({np.nanmax(np.where(r.survival_se(exact) > 0, z, np.nan)):.2f} "
          "standard errors)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "categorical.json").write_text(json.dumps({
        "outcomes": outcomes, "samples": samples, "generations": generations, "repeats": repeats,
        "zipf": exponent, "seed": seed, "probs": r.probs.tolist(),
        "survival_simulated": r.present.tolist(), "survival_exact": exact.tolist(),
        "p_lost_exact": lost_p.tolist(), "mean_generations_to_loss_exact": mean_loss.tolist(),
        "mean_generations_to_loss_simulated": [None if np.isnan(v) else v for v in simulated_mean_loss(r)],
    }, indent=1))
    plot(r, exact, mean_loss, out / "categorical.png")
    print(f"wrote {out / 'categorical.json'} and {out / 'categorical.png'}")
    return r
