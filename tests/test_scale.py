"""Beyond OPT-125m, rehearsed on tiny local checkpoints: the model-size sweep (Pythia: gpt_neox, stored in
fp16) and the LoRA config (SmolLM2: llama, stored in bf16), scaled down to one generation; LoRA training,
its merged checkpoints, resume, and gradient checkpointing."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from testbed import config
from testbed.cli import main
from testbed.config import LoraConfig, ModelConfig, TrainConfig
from testbed.mixing import human_examples
from testbed.model import build_model, train_bpe
from testbed.sweep.grid import expand
from testbed.train import train

from .helpers import REPO, launch
from .helpers.models import SCALE_DOWN, rehearse, save_checkpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("scale")
    data = rehearse.write_corpus(out / "data", None)
    return data, train_bpe((data / "train.txt").read_text().splitlines(), 400)


@pytest.mark.parametrize("settings", ["keep-10", pytest.param("all", marks=pytest.mark.slow)])
def test_model_size_config_runs_across_sizes_and_reports_by_size(corpus, tmp_path: Path, settings: str):
    data, tok = corpus
    sizes = {w: save_checkpoint(tmp_path / f"pythia-w{w}", tok, "gpt_neox", w, torch.float16) for w in (16, 32)}
    assert {v.dtype for v in load_file(sizes[16] / "model.safetensors").values()} == {torch.float16}
    path = REPO / "configs" / "model-size-pythia-wikitext2.yaml"
    axis = [f"model.name_or_path={sizes[16]},{sizes[32]}", "run.seed=0"]
    from testbed.sweep.grid import parse_axes

    runs = expand(config.load(path), parse_axes(axis))
    assert len(runs) == 4  # 2 mixing settings x 2 sizes; by default the paper's keep-10% only
    runs = [r for r in runs if settings == "all" or r.name.startswith(settings)]  # runs carry their setting's name
    for r in runs:
        assert main(["run", str(path), *r.overrides, *SCALE_DOWN, f"data.path={data}", "train.precision=fp32",
                     f"run.out_dir={tmp_path / 'sweep'}", f"run.name={r.name}"]) == 0, r.name
    if settings == "all":  # the whole report (what `testbed report` writes), with the size part
        assert main(["report", str(tmp_path / "sweep")]) == 0
    else:  # the size part alone (the other plots take seconds)
        from testbed.report.runs import find_runs
        from testbed.report.size import collapse_by_size

        collapse_by_size(find_runs([tmp_path / "sweep"]), tmp_path / "sweep")
    table = (tmp_path / "sweep" / "collapse_by_size.md").read_text()
    # One row per size (parameters from generation 0's checkpoint), one column pair per mixing setting.
    counts = [sum(v.numel() for v in load_file(sizes[w] / "model.safetensors").values()) for w in (16, 32)]
    rows = [line for line in table.splitlines() if line.startswith("| pythia-w")]
    assert [r.split("|")[1].strip() for r in rows] == ["pythia-w16", "pythia-w32"]
    assert [int(r.split("|")[2].replace(",", "")) for r in rows] == counts
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert ("| replace: ratio |" in header and "| keep 10%: ratio |" in header) \
        if settings == "all" else header.endswith("| keep 10%: ratio |")  # settings by their names
    assert (tmp_path / "sweep" / "collapse_by_size.png").is_file()


@pytest.fixture(scope="module")
def lora_run(corpus, tmp_path_factory) -> tuple[Path, Path]:
    data, tok = corpus
    out = tmp_path_factory.mktemp("lora")
    base = save_checkpoint(out / "smollm2-bf16", tok, "llama", 32, torch.bfloat16)
    path = REPO / "configs" / "lora-smollm2-1.7b-wikitext2.yaml"
    assert main(["run", str(path), f"model.name_or_path={base}", f"data.path={data}", *SCALE_DOWN,
                 "train.precision=fp32", "run.keep_checkpoints=all", f"run.out_dir={out}", "run.name=lora"]) == 0
    return out / "lora", base


def test_lora_config_trains_adapters_merged_into_plain_checkpoints(lora_run):
    run, base = lora_run
    assert {v.dtype for v in load_file(base / "model.safetensors").values()} == {torch.bfloat16}
    before = {k: v.float() for k, v in load_file(base / "model.safetensors").items()}
    for g in (0, 1):
        model = AutoModelForCausalLM.from_pretrained(run / f"gen_{g:03d}" / "model")  # plain, merged
        assert not any("lora" in name for name in model.state_dict())
        after = load_file(run / f"gen_{g:03d}" / "model" / "model.safetensors")
        changed = sorted({k.split(".")[-2] for k in after if not torch.equal(after[k], before[k])})
        # train.init=base: each generation's adapter sits on the pretrained weights; only its targets move.
        assert changed == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["ppl_human_zero_shot"] > rows[0]["ppl_human"]  # generation 0's adapter learnt
    timing = json.loads((run / "gen_001" / "timing.json").read_text())
    assert timing["batch_sizes"]["generate"] == {"16": 16}  # nothing ran out of memory: the configured batch
    assert 0 < timing["train_validation_s"] < timing["seconds"]["train"]  # timed apart, part of training


@pytest.mark.slow
def test_lora_run_resumes_from_its_merged_checkpoint(lora_run):
    run, _ = lora_run
    assert main(["run", "--resume", str(run), "run.generations=2", "--allow-config-change"]) == 0
    assert (run / "gen_002" / "COMPLETE").is_file()


def _llama(tok) -> torch.nn.Module:
    return build_model(ModelConfig(arch="llama", layers=1, width=32, heads=2, context=32), tok, seed=0)


def _train(tok, blocks, **cfg) -> tuple[torch.nn.Module, float]:
    model = _llama(tok)
    result = train(model, human_examples(blocks), blocks[:4], TrainConfig(lr=5e-3, batch_size=8, **cfg), 16,
                   Accelerator(cpu=True), seed=0, epochs=2)
    return model, result.val_loss


def test_lora_default_targets_are_peft_s_and_the_model_ends_plain(bpe_blocks):
    tok, blocks = bpe_blocks
    plain = _llama(tok)  # the same seeded init
    model, loss = _train(tok, blocks, lora=LoraConfig(enabled=True, rank=4, alpha=8, dropout=0.0))
    assert type(model).__name__ == "LlamaForCausalLM" and not any("lora" in k for k in model.state_dict())
    moved = {k.split(".")[-2] for k, v in model.state_dict().items()
             if not torch.equal(v, plain.state_dict()[k])}
    assert moved == {"q_proj", "v_proj"}  # peft's default for llama
    assert loss < np.log(len(tok))


def test_gradient_checkpointing_changes_memory_not_results(bpe_blocks):
    tok, blocks = bpe_blocks
    a, loss_a = _train(tok, blocks)
    b, loss_b = _train(tok, blocks, gradient_checkpointing=True)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in b.modules())  # off again after training
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-5), k


@pytest.mark.slow
def test_lora_on_the_paper_path(corpus, tmp_path: Path):
    """The paper config (OPT fp16 checkpoint, beam search, keep-10%) with LoRA on peft's OPT default."""
    data, _ = corpus
    tok = rehearse.opt_like_tokenizer(None, (data / "train.txt").read_text().splitlines(), vocab_size=400)
    model = rehearse.save_opt_checkpoint(tmp_path / "opt-fp16", tok, layers=1, width=32, heads=2, context=160)
    path = REPO / "configs" / "shumailov2024-opt125m-keep10.yaml"
    assert main(["run", str(path), f"model.name_or_path={model}", f"data.path={data}", *SCALE_DOWN,
                 "train.lora.enabled=true", "train.lr=1e-3", f"run.out_dir={tmp_path}", "run.name=p"]) == 0
    before = {k: v.float() for k, v in load_file(model / "model.safetensors").items()}
    after = load_file(tmp_path / "p" / "gen_001" / "model" / "model.safetensors")
    assert sorted({k.split(".")[-2] for k in after if not torch.equal(after[k], before[k])}) == ["q_proj", "v_proj"]


@pytest.mark.slow
def test_lora_with_two_processes(corpus, tmp_path: Path):
    """accelerate launch with two CPU processes: adapters seeded alike, trained data-parallel, merged the same
    in both (every generation ends with the processes comparing their weights)."""
    data, tok = corpus
    base = save_checkpoint(tmp_path / "llama-bf16", tok, "llama", 32, torch.bfloat16)
    path = REPO / "configs" / "lora-smollm2-1.7b-wikitext2.yaml"
    args = ["run", str(path), f"model.name_or_path={base}", f"data.path={data}", *SCALE_DOWN, "train.precision=fp32",
            f"run.out_dir={tmp_path}"]
    two = launch("-m", "testbed.cli", *args, "run.name=two", timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two" / "gen_001" / "COMPLETE").is_file()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "gen_001" / "model")
    assert not any("lora" in name for name in merged.state_dict())
