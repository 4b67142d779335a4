"""What every figure shares, and what each figure shows: its panels, series and legends, from sweeps written
by hand (nothing is run)."""

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.metrics import registry
from testbed.metrics.registry import BY_KEY
from testbed.report import figures
from testbed.report.plotting import tick_label
from testbed.report.runs import Run, find_runs, group_settings

from .test_report import fake_run

# The defences sweep's design: three families of settings (how they mix data), 11 settings in all.
POOL = {"mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.5}
DEFENCES = [{"name": "no defence", "mixing.strategy": "replace"},
            {"name": "MinHash dedup", "mixing.strategy": "replace", "curate.dedup": "minhash"},
            {"name": "perplexity filter", "mixing.strategy": "replace", "curate.perplexity_keep": 0.5},
            {"name": "grammar verifier", "mixing.strategy": "replace", "curate.verifier": "grammar"},
            {"name": "50% pool, no detector", **POOL},
            {"name": "50% pool, watermark", **POOL, "generation.watermark.enabled": True,
             "curate.detector": "watermark"},
            *({"name": f"50% pool, oracle TPR {t}", **POOL, "curate.detector": "oracle", "curate.detector_tpr": t}
              for t in (0.5, 0.9, 0.99)),
            {"name": "10% human, reused", "mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.1},
            {"name": "10% human, fresh", "mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.1,
             "mixing.human_pool": "fresh"}]


def metric_value(m: registry.Metric, rate: float, generation: int, seed: int) -> float:
    """A value of every report metric that moves `rate` per generation the way collapse moves it, seeds apart."""
    damage = rate * generation * (1 + 0.1 * seed)
    if m.log:
        return 30.0 * np.exp(damage)
    start = 0.5 if m.high is not None else 2.0
    value = start * np.exp(-damage) if m.higher_is_better else start * (1 + damage)
    return float(m.clip(value + 0.01 * seed))


def write_sweep(root: Path, settings: list[dict], rates: list[float], generations: int = 3,
                seeds: tuple[int, ...] = (0, 1), synthetic: bool = False) -> Path:
    """A sweep of `settings` x `seeds` with a value of every report metric at each generation; with
    `synthetic`, each generation's synthetic set too (ppl_gen0: lognormal, narrowing by `rate`, with one
    extreme outlier per set) and human text's perplexities in the baseline."""
    metrics = registry.shown_in(registry.REPORT)
    rng = np.random.default_rng(0)
    for setting, rate in zip(settings, rates):
        config = {k: v for k, v in setting.items() if k != "name"}
        for seed in seeds:
            rows = [{"generation": g, **{m.key: metric_value(m, rate, g, seed) for m in metrics}}
                    for g in range(generations + 1)]
            run = fake_run(root, f"{setting['name']},seed={seed}", {**config, "run.seed": seed}, rows, settings)
            if synthetic:
                import datasets

                for g in range(1, generations + 1):
                    ppl = np.exp(rng.normal(3.3 - rate * g, 0.5 / (1 + rate * g), 300))
                    datasets.Dataset.from_dict({"ppl_gen0": [*ppl, 1e6]}).save_to_disk(
                        str(run / f"gen_{g:03d}" / "synthetic"))
                human = np.exp(rng.normal(3.4, 0.6, 200)).tolist()
                (run / "human_baseline.json").write_text(json.dumps({"distinct_2": 0.9, "ppl_human": 30.0,
                                                                     "ppl_gen0_per_sequence": human}))
    return root


HEAL = {"strategy": "fixed_fraction", "human_fraction": 1.0}
PRETRAINED = [{"name": "human-only", "mixing.strategy": "fixed_fraction", "mixing.human_fraction": 1.0},
              {"name": "replace", "mixing.strategy": "replace"},
              *({"name": f"heal{pool}-k{k}", "mixing.schedule": [{"from_generation": k + 1, **HEAL, **extra}]}
                for pool, extra in (("", {}), ("-pretrain", {"human_pool": "pretrain"})) for k in (1, 5))]


def out_of_domain_kl(name: str, generation: int, seed: int) -> float:
    """kl_per_word_other as the pretrained-recovery sweep has it: the control forgets slowly (0.7 + 0.05 g),
    replace adds 1 nat per generation (and 0.1 x seed); healing from k takes the excess back to the control
    (in-domain data) or to the base's 0.2 (the pretraining mixture) in one generation."""
    control = 0.7 + 0.05 * generation
    k = int(name[-1]) if name.startswith("heal") else 99
    if name == "human-only":
        return control
    if generation <= k:
        return control + (1.0 + 0.1 * seed) * generation
    return 0.2 if "pretrain" in name else control


def write_pretrained_sweep(root: Path, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """The pretrained-recovery design: a control, replace for 8 generations, healing from k = 1 or 5 on
    domain data or the pretraining mixture; kl_per_word_other as `out_of_domain_kl`, ppl_other = 40 e^KL,
    the base's zero-shot KL 0.2 (perplexity 40 e^0.2)."""
    for s in PRETRAINED:
        config = {k: v for k, v in s.items() if k != "name"} | {"eval.corpora.other": "builtin:1",
                                                                 "pretrain.source": "builtin"}
        for seed in seeds:
            rows = []
            for g in range(9):
                kl = out_of_domain_kl(s["name"], g, seed)
                rows.append({"generation": g, "kl_per_word_other": kl, "ppl_other": 40 * np.exp(kl),
                             "ppl_human": 30 * np.exp(kl - 0.7), **({"kl_per_word_other_zero_shot": 0.2,
                                                                    "ppl_other_zero_shot": 40 * np.exp(0.2)}
                                                                   if g == 0 else {})})
            fake_run(root, f"{s['name']},seed={seed}", config | {"run.seed": seed}, rows, PRETRAINED)
    return root


@pytest.fixture(scope="module")
def defences(tmp_path_factory) -> Path:
    rates = [0.8, 0.9, 0.7, 0.75, 0.1, 0.05, 0.08, 0.06, 0.04, 0.3, 0.32]
    return write_sweep(tmp_path_factory.mktemp("defences"), DEFENCES, rates)


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


def test_histogram_bins_follow_the_freedman_diaconis_rule_in_log_perplexity():
    """8001 values evenly over 2 decades: interquartile range 1 decade, bin width 2 x 1 x 8001^(-1/3) = 0.1
    decade, 20 bins; 1001 values: 0.2 decade, 10; one value alone does not set them."""
    even = 10 ** np.linspace(0, 2, 8001)
    edges = figures.histogram_bins([even, np.array([5.0])], 1.0, 100.0)
    assert len(edges) == 21 and np.allclose(np.diff(np.log10(edges)), 0.1)
    assert len(figures.histogram_bins([10 ** np.linspace(0, 2, 1001)], 1.0, 100.0)) == 11
    assert len(figures.histogram_bins([even, even, 10 ** np.linspace(0, 2, 1001)], 1.0, 100.0)) == 21  # the median


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


def _legends(fig) -> list[list[str]]:
    return [[t.get_text() for t in legend.get_texts()] for legend in fig.legends]


def _styles(ax) -> list[tuple]:
    """(colour, dash pattern, marker) of each line of a panel's settings (not the references, not human text)."""
    from matplotlib.colors import to_hex

    return [(to_hex(line.get_color()), str(line._dash_pattern), line.get_marker()) for line in ax.lines
            if not line.get_label().startswith("_") and line.get_label() != "human text"
            and not line.get_label().endswith("(reference)")]


def test_many_settings_are_drawn_a_column_per_family_with_the_references(defences: Path):
    """11 settings: a column per way of mixing data (replace, a 50% pool, 10% human), each with its own legend,
    the undefended replace setting drawn in every column, and every series of a panel in its own colour,
    line style and marker."""
    found = find_runs([defences])
    groups = group_settings(found)
    fig = figures.grid_figure(figures.present(registry.HEADLINE, found), groups, found, "t")
    headline = [m.key for m in figures.present(registry.HEADLINE, found)]
    assert headline == ["ppl_human", "distinct_2", "self_bleu", "tail_coverage"]
    assert len(fig.axes) == 4 * 3
    assert _legends(fig) == [
        ["MinHash dedup", "perplexity filter", "grammar verifier", "no defence (reference)", "human text"],
        [s["name"] for s in DEFENCES[4:9]] + ["no defence (reference)", "human text"],
        ["10% human, reused", "10% human, fresh", "no defence (reference)", "human text"]]
    assert [t.get_text() for t in fig.texts[2:]] == ["mixing: replace", "mixing: fixed_fraction, 50%\nhuman",
                                                      "mixing: fixed_fraction, 10%\nhuman"]
    for ax, n in zip(fig.axes, [3, 5, 2] * 4):  # a row per metric
        styles = _styles(ax)
        assert len(styles) == n and all(len({s[i] for s in styles}) == n for i in range(3))  # all three differ
    assert fig.get_figwidth() <= figures.PAGE_IN
    # The pool's perplexity panel is scaled to the pool (at most 30 e^{0.1 x 3 x 1.1} at generation 3), not to
    # the reference it would squash (30 e^{0.8 x 3} and more): that leaves the panel at the top.
    top = fig.axes[1].get_ylim()[1]
    assert 30 * np.exp(0.33) <= top < 30 * np.exp(0.4) < 30 * np.exp(2.4)
    figures.pyplot().close(fig)


def test_few_settings_share_one_legend_and_the_metrics_split_by_the_registry_groups(tmp_path: Path):
    settings = [{"name": "replace", "mixing.strategy": "replace"},
                {"name": "accumulate", "mixing.strategy": "accumulate"}]
    found = find_runs([write_sweep(tmp_path, settings, [0.6, 0.1])])
    groups = group_settings(found)
    figs = figures.metric_figures(groups, found)
    expected = {}
    for m in registry.shown_in(registry.REPORT):
        expected.setdefault(m.group, []).append(m.title)
    assert list(figs) == list(expected) == ["fit", "diversity", "tails", "quality", "internals"]
    for group, fig in figs.items():
        drawn = [ax for ax in fig.axes if ax.axison]
        assert [ax.get_title().replace("\n", " ").split(" (")[0] for ax in drawn] == \
            [t.split(" (")[0] for t in expected[group]]
        human = ["human text"] if group == "diversity" else []  # the baseline has distinct_2 alone
        assert _legends(fig) == [["replace", "accumulate", *human]]
        assert fig.get_figwidth() <= figures.PAGE_IN
        assert fig._suptitle.get_text() == registry.GROUPS[group]
        figures.pyplot().close(fig)


def test_histogram_range_fits_the_mass_not_the_outliers(tmp_path: Path):
    """Each synthetic set holds one perplexity of 10^6: the x range ends at the pooled 99.5% quantile."""
    settings = [{"name": "replace", "mixing.strategy": "replace"},
                {"name": "accumulate", "mixing.strategy": "accumulate"},
                {"name": "50% human", "mixing.strategy": "fixed_fraction", "mixing.human_fraction": 0.5}]
    found = find_runs([write_sweep(tmp_path, settings, [0.6, 0.1, 0.05], generations=2, synthetic=True)])
    groups = group_settings(found)
    pooled = np.concatenate([figures._synthetic_ppl(r, g) for r in found for g in (1, 2)] +
                            [np.asarray(r.baseline["ppl_gen0_per_sequence"]) for r in found])
    assert pooled.max() == 1e6
    low, high = np.quantile(pooled, [0.005, 0.995])
    fig = figures.histogram_figure(groups)
    drawn = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in drawn] == list(groups)
    for ax in drawn:
        assert ax.get_xscale() == "log"
        assert np.allclose(ax.get_xlim(), (low, high)) and high < 1e3
        edges = ax.patches[0].get_path().vertices[:, 0]  # log bins: a constant ratio between edges
        assert np.isclose(edges.min(), low) and np.isclose(edges.max(), high)
    assert _legends(fig) == [["data of model 0", "data of model 1", "human text"]]
    figures.pyplot().close(fig)


def test_out_of_domain_figure_draws_the_excess_over_the_control(tmp_path: Path):
    """kl_per_word_other beyond the control, seed means over seeds 0 and 1 (`out_of_domain_kl`): healing on
    domain data ends on the control (0), on the mixture at the base (0.2 - control 1.1 = -0.9); replace at 8
    x 1.05; the share of the excess at k = 1 given back by the mixture: (1.0 + 0.9) / 1.0 and (1.1 + 0.9) / 1.1,
    186% ± 6%."""
    from testbed.report.recovery import out_of_domain_figure

    found = find_runs([write_pretrained_sweep(tmp_path)])
    fig = out_of_domain_figure(group_settings(found), found)
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["Perplexity on other (eval.corpora)", "KL(other || model), estimated"]
    kl = fig.axes[1]
    ends = {line.get_label(): line.get_ydata()[-1] for line in kl.lines if not line.get_label().startswith("_")}
    assert np.isclose(ends["heal-k1 (k=1; fixed_fraction, human_fraction=1.0)"], 0.0)
    assert np.isclose(ends["heal-pretrain-k1 (k=1; fixed_fraction, human_fraction=1.0, human_pool=pretrain)"], -0.9)
    assert np.isclose(ends["pretrained base"], -0.9)
    assert np.isclose(ends["replace (no healing)"], 8 * 1.05)
    assert ends["human-only control (each run against its seed's)"] == 0.0
    assert "heal-pretrain-k1: 186% ± 6%" in kl.texts[0].get_text()
    assert fig.axes[0].get_yscale() == "log" and np.isclose(fig.axes[0].lines[0].get_ydata()[0], 1.0)  # ×1
    figures.pyplot().close(fig)


def test_report_writes_every_figure(tmp_path: Path):
    """The pretrained-recovery design: in-domain and eval.corpora metrics, healing runs and a control."""
    from testbed.report.tables import write_report

    written = [p.name for p in write_report([write_pretrained_sweep(tmp_path / "sweep")], tmp_path)]
    assert written == ["report.md", "headline.png", "metrics-fit.png", "metrics-fit-other.png",
                       "synthetic_ppl_gen0.png", "recovery.png", "out_of_domain.png"]
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in written[1:])
