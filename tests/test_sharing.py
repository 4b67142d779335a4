"""The identity rules of shared prefixes."""

from testbed import config, sharing


def test_prefix_values_decide_which_generations_two_runs_share():
    """Runs agree on generations 0..k when nothing that decides them differs: a switch to human data at
    generation 3 leaves 0-2 shared with pure replace; evaluation keys decide generation 0's row already,
    the watermark only generations >= 1."""
    heal = config.load(None, ["mixing.schedule=[{from_generation: 3, strategy: fixed_fraction, human_fraction: 1}]"])
    assert sharing.shared_prefix(config.load(None), heal) == 2
    assert sharing.shared_prefix(config.load(None, ["run.generations=9"]), config.load(None)) == 5
    assert sharing.shared_prefix(config.load(None, ["mixing.strategy=accumulate"]), config.load(None)) == 0
    assert sharing.shared_prefix(config.load(None, ["generation.watermark.enabled=true"]), config.load(None)) == 0
    assert sharing.shared_prefix(config.load(None, ["eval.num_samples=64"]), config.load(None)) == -1
    assert sharing.prefix_diff(config.load(None, ["train.lr=1e-3"]), config.load(None), 0) == ["train.lr"]
