import numpy as np
import pytest
import torch
from accelerate import Accelerator

from testbed.config import ModelConfig, TrainConfig
from testbed.mixing import human_examples, synthetic_examples
from testbed.model import build_model
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


def test_training_changes_parameters_and_lowers_loss(bpe_blocks):
    tok, blocks = bpe_blocks
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=3, lr=5e-3, batch_size=8)
    result = train(model, human_examples(blocks), blocks[:4], cfg, 16, Accelerator(cpu=True), seed=0, epochs=3)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)
    assert result.steps == 3 * -(-len(blocks) // 8) and result.tokens == 3 * len(blocks) * 16
    assert result.val_loss < np.log(len(tok))  # better than uniform


def test_select_best_restores_the_best_epoch(bpe_blocks, monkeypatch):
    import testbed.train as t

    tok, blocks = bpe_blocks
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
def test_compiled_training_keeps_plain_state(bpe_blocks):
    tok, blocks = bpe_blocks
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, human_examples(blocks), blocks[:4], TrainConfig(epochs=2, lr=5e-3, batch_size=8, compile=True), 16,
          Accelerator(cpu=True), seed=0, epochs=2)
    state = model.state_dict()
    assert set(state) == set(before)  # no "_orig_mod." prefixes: checkpoints stay loadable
    assert any(not torch.equal(state[k], before[k]) for k in before)


def test_last_epoch_best_keeps_the_final_weights(bpe_blocks, monkeypatch):
    import testbed.train as t

    tok, blocks = bpe_blocks
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)
    losses = iter([3.0, 2.0, 1.0])
    states = []

    def fake_validation(*args):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(losses)

    monkeypatch.setattr(t, "validation_loss", fake_validation)
    result = t.train(model, human_examples(blocks), blocks[:4], TrainConfig(epochs=3, lr=5e-3, batch_size=8),
                     16, Accelerator(cpu=True), seed=0, epochs=3)
    assert result.best_epoch == 3.0
    assert all(torch.equal(v, states[2][k]) for k, v in model.state_dict().items())


def test_per_epoch_cosine_matches_torch_cosine_annealing():
    """schedule_interval=epoch is CosineAnnealingLR(T_max=epochs, eta_min) stepped once an epoch."""
    cfg = TrainConfig(lr=2e-5, min_lr=1e-6, schedule="cosine", schedule_interval="epoch")
    epochs, steps_per_epoch = 5, 7
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=cfg.min_lr)
    for epoch in range(epochs):
        expected = sched.get_last_lr()[0]
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            assert cfg.lr * lr_factor(step, epochs * steps_per_epoch, cfg, steps_per_epoch) == pytest.approx(expected)
        opt.step()
        sched.step()


def test_pack_separates_synthetic_examples_that_lack_an_eos():
    eos = 9
    ex = synthetic_examples(np.array([[1, 2, 9], [4, 5, 0], [6, 0, 0]]), np.array([3, 2, 1]), 1)
    stream = pack(ex, 1, seed=0, separator=eos).ravel().tolist()
    # Every example ends with exactly one eos: [1, 2, 9] keeps its own, the others get one.
    assert sorted(stream) == [1, 2, 4, 5, 6, 9, 9, 9]
    assert stream[-1] == eos and all(stream[i + 1] == eos for i, t in enumerate(stream) if t in (2, 5, 6))
    human = human_examples(np.array([[1, 2], [3, 4]]))
    assert sorted(pack(human, 1, seed=0, separator=eos).ravel().tolist()) == [1, 2, 3, 4]  # human text untouched


def test_weight_decay_groups():
    from testbed.train import _optimizer

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    matrices = _optimizer(model, TrainConfig(weight_decay=0.01), torch.device("cpu")).param_groups
    assert [(len(g["params"]), g["weight_decay"]) for g in matrices] == [(1, 0.01), (3, 0.0)]
    everything = _optimizer(model, TrainConfig(weight_decay=0.01, weight_decay_all=True), torch.device("cpu"))
    assert [(len(g["params"]), g["weight_decay"]) for g in everything.param_groups] == [(4, 0.01)]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_fp32_master_weights(bpe_blocks, precision):
    tok, blocks = bpe_blocks
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=2, lr=5e-3, batch_size=8, precision=precision)
    result = train(model, human_examples(blocks), blocks[:4], cfg, 16, Accelerator(cpu=True), seed=0, epochs=2)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    assert np.isfinite(result.val_loss) and result.val_loss < np.log(len(tok))
def test_dropout_draws_differ_between_processes(bpe_blocks):
    class SecondProcess(Accelerator):
        process_index = 1  # what `accelerate launch` gives the second process

    tok, blocks = bpe_blocks

    def trained(accelerator: Accelerator) -> dict[str, torch.Tensor]:
        model = build_model(ModelConfig(layers=1, width=32, heads=2, context=32), tok, seed=0)  # dropout 0.1
        train(model, human_examples(blocks), blocks[:4], TrainConfig(epochs=1, lr=5e-3, batch_size=8), 16,
              accelerator, seed=0, epochs=1)
        return model.state_dict()

    first, again = trained(Accelerator(cpu=True)), trained(Accelerator(cpu=True))
    second = trained(SecondProcess(cpu=True))
    assert all(torch.equal(v, again[k]) for k, v in first.items())  # seeded: a process repeats itself
    assert not any(torch.equal(v, second[k]) for k, v in first.items() if k.endswith("c_fc.weight"))
