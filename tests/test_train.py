import numpy as np
import pytest
import torch
from accelerate import Accelerator

from testbed.config import ModelConfig, TrainConfig
from testbed.mixing import human_examples, synthetic_examples
from testbed.model import build_model, train_bpe
from testbed.train import lr_factor, pack, train


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=2, schedule="cosine")
    assert lr_factor(0, 12, cfg) == pytest.approx(0.5)  # warmup 1/2
    assert lr_factor(2, 12, cfg) == pytest.approx(1.0)
    assert lr_factor(7, 12, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert lr_factor(12, 12, cfg) == pytest.approx(0.1)
    assert lr_factor(7, 12, TrainConfig(lr=1.0, warmup_steps=2, schedule="linear")) == pytest.approx(0.5)
    assert lr_factor(9, 12, TrainConfig(schedule="constant")) == 1.0


def test_pack_has_no_padding():
    ex = synthetic_examples(np.array([[1, 2, 3], [4, 5, 0], [6, 0, 0]]), np.array([3, 2, 1]), 1)
    blocks = pack(ex, 3, seed=0)
    assert blocks.shape == (2, 3)
    assert sorted(blocks.ravel().tolist()) == [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def tiny():
    lines = ["the cat sat on the mat and the dog ran far away"] * 50
    tok = train_bpe(lines, 300)
    ids = np.array(tok(" ".join(lines))["input_ids"][: 64 * 8]).reshape(-1, 16)
    return tok, ids


def test_training_changes_parameters_and_lowers_loss(tiny):
    tok, blocks = tiny
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=3, lr=5e-3, batch_size=8)
    result = train(model, human_examples(blocks), blocks[:4], cfg, 16, Accelerator(cpu=True), seed=0, epochs=3)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)
    assert result.steps == 3 * -(-len(blocks) // 8) and result.tokens == 3 * len(blocks) * 16
    assert result.val_loss < np.log(len(tok))  # better than uniform


def test_select_best_restores_the_best_epoch(tiny, monkeypatch):
    import testbed.train as t

    tok, blocks = tiny
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)
    losses = iter([3.0, 1.0, 2.0])  # validation after epochs 1, 2, 3: epoch 2 is best
    states = []

    def fake_validation(*args):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(losses)

    monkeypatch.setattr(t, "validation_loss", fake_validation)
    result = t.train(model, human_examples(blocks), blocks[:4], TrainConfig(epochs=3, lr=5e-3, batch_size=8),
                     16, Accelerator(cpu=True), seed=0, epochs=3)
    assert result.best_epoch == 2.0 and result.val_loss == 1.0
    assert all(torch.equal(v, states[1][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, states[2][k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_compiled_training_keeps_plain_state(tiny):
    tok, blocks = tiny
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, human_examples(blocks), blocks[:4], TrainConfig(epochs=2, lr=5e-3, batch_size=8, compile=True), 16,
          Accelerator(cpu=True), seed=0, epochs=2)
    state = model.state_dict()
    assert set(state) == set(before)  # no "_orig_mod." prefixes: checkpoints stay loadable
    assert any(not torch.equal(state[k], before[k]) for k in before)


def test_dropout_draws_differ_between_processes(tiny):
    class SecondProcess(Accelerator):
        process_index = 1  # what `accelerate launch` gives the second process

    tok, blocks = tiny

    def trained(accelerator: Accelerator) -> dict[str, torch.Tensor]:
        model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)  # dropout 0.1
        train(model, human_examples(blocks), blocks[:4], TrainConfig(epochs=1, lr=5e-3, batch_size=8), 16,
              accelerator, seed=0, epochs=1)
        return model.state_dict()

    first, again = trained(Accelerator(cpu=True)), trained(Accelerator(cpu=True))
    second = trained(SecondProcess(cpu=True))
    assert all(torch.equal(v, again[k]) for k, v in first.items())  # seeded: a process repeats itself
    assert not any(torch.equal(v, second[k]) for k, v in first.items() if k.endswith("c_fc.weight"))
