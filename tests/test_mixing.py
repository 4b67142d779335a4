import re

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


def test_fresh_human_pool_never_repeats_a_block():
    from testbed.config import ConfigError
    from testbed.mixing import check_fresh_pool

    cfg = MixingConfig(strategy="fixed_fraction", human_fraction=0.1, human_pool="fresh")
    pool = human_examples(10_000 + np.arange(40 * 4).reshape(40, 4))  # blocks generation 0 never saw
    seen = []
    for g in (1, 2, 3, 4):
        out = mix(cfg, H, [synth(g)], g, seed=0, fresh=pool)
        rows = out.ids[out.source == "human"]
        assert len(rows) == 10 and (rows[:, 0] >= 10_000).all()  # from the pool, not generation 0's blocks
        seen += rows[:, 0].tolist()
    assert len(set(seen)) == 40  # 4 generations x 10 blocks, none twice
    check_fresh_pool(cfg, 100, 4, 40, cap=len(H))
    with pytest.raises(ConfigError, match="fresh needs 50 unseen human blocks over 5 generations .* but the "
                                          "training split holds 40"):
        check_fresh_pool(cfg, 100, 5, 40, cap=len(H))


def test_schedule_changes_the_mix_by_generation_and_fresh_blocks_never_repeat():
    """A schedule: replace for generations 1-2, then 10% fresh human blocks, then 30% from generation 4:
    each generation gets its own share, and the fresh draws continue where the earlier ones stopped."""
    from testbed.config import ConfigError
    from testbed.mixing import check_fresh_pool

    cfg = MixingConfig(schedule=[
        {"from_generation": 3, "strategy": "fixed_fraction", "human_fraction": 0.1, "human_pool": "fresh"},
        {"from_generation": 4, "human_fraction": 0.3}])
    assert cfg.at(2).strategy == "replace" and cfg.at(4).human_pool == "fresh" and cfg.at(4).human_fraction == 0.3
    pool = human_examples(10_000 + np.arange(80 * 4).reshape(80, 4))
    seen = []
    for g, n_human in ((1, 0), (2, 0), (3, 10), (4, 30), (5, 30)):
        out = mix(cfg, H, [synth(g)], g, seed=0, fresh=pool, total=100)
        rows = out.ids[out.source == "human"]
        assert len(out) == 100 and len(rows) == n_human
        seen += rows[:, 0].tolist()
    assert len(seen) == len(set(seen)) == 70
    check_fresh_pool(cfg, 100, 4, 40, cap=len(H))  # generations 3 and 4 draw 10 + 30
    with pytest.raises(ConfigError, match="fresh needs 70 unseen human blocks over 5 generations"):
        check_fresh_pool(cfg, 100, 5, 40, cap=len(H))


def test_synthetic_sets_round_trip_through_datasets(tmp_path):
    import datasets

    from testbed.mixing import load_synthetic, save_synthetic

    ex = synthetic_examples(np.array([[5, 6, 7], [8, 0, 0]]), np.array([3, 1]), 2)
    save_synthetic(tmp_path / "synthetic", ex, ["a b c", "d"], {"ppl_gen0": np.array([1.5, np.nan])})
    back = load_synthetic(tmp_path / "synthetic")
    assert back.ids.tolist() == [[5, 6, 7], [8, 0, 0]] and back.lengths.tolist() == [3, 1]
    assert back.composition() == {"synthetic@2": 2}
    ds = datasets.load_from_disk(str(tmp_path / "synthetic"))
    assert ds.column_names == ["index", "text", "input_ids", "source", "generation", "ppl_gen0"]
    assert ds[1]["text"] == "d" and ds[0]["ppl_gen0"] == 1.5


def test_complementary_draw_takes_each_block_once():
    """The authors' draw (fixed_subset + complementary): the same human tenth every generation, and the
    continuations of the other nine tenths of the blocks."""
    def pool(g: int):
        cont = synthetic_examples(H.ids[:, :3] + 1000 * g, np.full(len(H), 3), g)  # row i continues block i
        return mix(MixingConfig(strategy="fixed_fraction", human_fraction=0.1, fixed_subset=True, complementary=True),
                   H, [cont], g, seed=0)

    one, two = pool(1), pool(2)
    assert one.composition() == {"human": 10, "synthetic@1": 90}
    human_blocks = {int(r[0]) for r in one.ids[one.source == "human"]}
    continued = {int(r[0]) - 1000 for r in one.ids[one.source == "synthetic"]}
    assert len(human_blocks) == 10 and human_blocks.isdisjoint(continued) and len(human_blocks | continued) == 100
    assert {int(r[0]) for r in two.ids[two.source == "human"]} == human_blocks  # the same tenth each generation


@pytest.mark.parametrize("overrides, message", [
    (["mixing.complementary=true"], "applies to mixing.strategy=fixed_fraction"),
    (["mixing.strategy=fixed_fraction", "mixing.complementary=true", "generation.num_samples=10"],
     "generation.num_samples=null"),
    (["mixing.strategy=fixed_fraction", "mixing.complementary=true", "curate.dedup=exact"], "no curate.dedup"),
])
def test_complementary_needs_one_continuation_per_block(overrides, message):
    from testbed import config

    with pytest.raises(config.ConfigError, match=f"config key 'mixing.complementary': .*{re.escape(message)}"):
        config.load(None, overrides)
    config.load(None, ["mixing.strategy=fixed_fraction", "mixing.complementary=true"])  # valid


def test_pretrain_human_pool_draws_from_the_pretraining_blocks():
    """human_pool=pretrain: the human share comes from the pretraining text's blocks (a fresh draw each
    generation, capped by their number), never from generation 0's."""
    cfg = MixingConfig(strategy="fixed_fraction", human_fraction=0.5, human_pool="pretrain")
    pretraining = human_examples(20_000 + np.arange(300 * 4).reshape(300, 4))
    draws = []
    for g in (1, 2):
        out = mix(cfg, H, [synth(g)], g, seed=0, pretraining=pretraining)
        rows = out.ids[out.source == "human"]
        assert len(rows) == 50 and (rows[:, 0] >= 20_000).all() and (out.source == "synthetic").sum() == 50
        draws.append(set(rows[:, 0].tolist()))
    assert draws[0] != draws[1]
    small = human_examples(20_000 + np.arange(30 * 4).reshape(30, 4))
    assert (mix(cfg, H, [synth(1)], 1, seed=0, pretraining=small).source == "human").sum() == 30
