"""The identity rules of shared prefixes."""

from testbed import config
from testbed.sweep import sharing


def test_prefix_values_decide_which_generations_two_runs_share():
    """Runs agree on generations 0..k when nothing that decides them differs: a switch to human data at
    generation 3 leaves 0-2 shared with pure replace; evaluation keys decide generation 0's row already,
    the watermark only generations >= 1."""
    heal = config.load(None, ["mixing.schedule=[{from_generation: 3, strategy: fixed_fraction, human_fraction: 1}]"])
    assert sharing.shared_prefix(config.load(None), heal) == 2
    assert sharing.shared_prefix(config.load(None, ["run.generations=9"]), config.load(None)) == 5
    assert sharing.shared_prefix(config.load(None, ["mixing.strategy=accumulate"]), config.load(None)) == 0
    assert sharing.shared_prefix(config.load(None, ["generation.watermark.enabled=true"]), config.load(None)) == 0
    assert sharing.shared_prefix(config.load(None, ["eval.num_samples=64"]), config.load(None)) == sharing.NONE
    assert sharing.prefix_diff(config.load(None, ["train.lr=1e-3"]), config.load(None), 0) == ["train.lr"]


def test_the_base_is_decided_by_pretraining_not_by_the_fine_tuning():
    """With a pretrained base (generation -1), runs of another seed, fine-tuning domain, learning rate or
    evaluation share the base only; another pretraining, model or language shape shares nothing."""
    pre = ["pretrain.source=builtin", "data.language.domains=2"]
    base = config.load(None, pre)
    for other in (["run.seed=3"], ["data.language.domain=1"], ["train.lr=1e-3"], ["eval.num_samples=64"],
                  ["data.language.train_sentences=500"], ["train.gen0_epochs=2"]):
        assert sharing.shared_prefix(base, config.load(None, [*pre, *other])) == sharing.BASE, other
    for other in (["pretrain.sentences=100"], ["pretrain.seed=1"], ["model.width=64"], ["data.language.domains=3"],
                  ["data.block_size=32"], ["tokenizer.vocab_size=1000"], ["train.batch_size=8"]):
        assert sharing.shared_prefix(base, config.load(None, [*pre, *other])) == sharing.NONE, other
    assert sharing.shared_prefix(base, config.load(None)) == sharing.NONE  # no base to share
