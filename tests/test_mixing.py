import numpy as np
import pytest

from testbed.config import MixingConfig
from testbed.mixing import concat, human_examples, mix, synthetic_examples

H = human_examples(np.arange(100 * 4).reshape(100, 4))


def synth(g: int, n: int = 100, width: int = 3):
    return synthetic_examples(np.full((n, width), 1000 + g), np.full(n, width), g)


def test_replace_is_this_generations_synthetic_only():
    out = mix(MixingConfig(strategy="replace"), H, [synth(1), synth(2)], 2, seed=0)
    assert out.composition() == {"synthetic@2": 100}


@pytest.mark.parametrize("p, n_human", [(0.1, 10), (0.5, 50), (0.0, 0), (1.0, 100)])
def test_fixed_fraction_composition(p, n_human):
    out = mix(MixingConfig(strategy="fixed_fraction", human_fraction=p), H, [synth(1)], 1, seed=0)
    assert len(out) == 100
    assert (out.source == "human").sum() == n_human
    assert (out.generation[out.source == "synthetic"] == 1).all()
    assert (out.generation[out.source == "human"] == 0).all()


def test_fixed_fraction_fresh_draw_or_fixed_subset():
    def human_rows(fixed: bool, g: int):
        out = mix(MixingConfig(strategy="fixed_fraction", human_fraction=0.2, fixed_subset=fixed), H,
                  [synth(g)], g, seed=0)
        return set(map(tuple, out.ids[out.source == "human"].tolist()))

    assert human_rows(False, 1) != human_rows(False, 2)
    assert human_rows(True, 1) == human_rows(True, 2)


def test_accumulate_keeps_everything():
    out = mix(MixingConfig(strategy="accumulate"), H, [synth(1), synth(2), synth(3)], 3, seed=0)
    assert out.composition() == {"human": 100, "synthetic@1": 100, "synthetic@2": 100, "synthetic@3": 100}
    # widths differ (4 vs 3): lengths keep the true size of each example
    assert out.ids.shape == (400, 4) and sorted(set(out.lengths.tolist())) == [3, 4]


def test_accumulate_subsample_has_the_size_of_the_human_set():
    out = mix(MixingConfig(strategy="accumulate_subsample"), H, [synth(1), synth(2), synth(3)], 3, seed=0)
    comp = out.composition()
    assert len(out) == 100 and sum(comp.values()) == 100
    assert set(comp) == {"human", "synthetic@1", "synthetic@2", "synthetic@3"}  # all sources drawn


def test_concat_pads():
    out = concat([synth(1, 2, 2), synth(2, 1, 3)])
    assert out.ids.tolist() == [[1001, 1001, 0], [1001, 1001, 0], [1002, 1002, 1002]]
