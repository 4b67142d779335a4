"""testbed plan: parameter counts and memory per stage from model configs, against the measured peak of a
training step on the CPU, and the shipped configs offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import OPTConfig, Qwen2Config

from testbed import config
from testbed.cli import main
from testbed.sweep import plan

from .helpers import REPO

# A training step's measured peak beyond the weights and AdamW's states, against the estimate's gradients,
# activations and logits. Estimated and measured differ by what the formula leaves out (the loss's small
# temporaries, allocator rounding) and by its upper-bound simplifications (gradients counted beside every
# activation, though the backward pass frees activations as gradients appear): 20% either way.
TOLERANCE = 0.20

GPT2_LOGITS = ["model.arch=gpt2", "model.layers=2", "model.width=64", "model.heads=2", "model.context=64",
               "tokenizer.vocab_size=8192", "data.block_size=64", "train.batch_size=16", "generation.prompt_tokens=16",
               "generation.max_new_tokens=16", "eval.prompt_tokens=16", "eval.max_new_tokens=16"]


def gqa_llama(tmp_path: Path) -> Path:
    """A local llama config (no weights) with grouped-query attention: 4 heads share 2 key-value heads."""
    d = tmp_path / "llama-gqa"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256, "intermediate_size": 1024,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
        "max_position_embeddings": 128, "tie_word_embeddings": True}))
    return d


CHILD = """
import gc, json, sys, torch
from transformers import AutoModelForCausalLM
from testbed import config
from testbed.sweep import plan
from testbed.train import _optimizer
from tests.helpers import load_script

bench = load_script("bench_memory")
peaks = []
for overrides in json.loads(sys.argv[1]):
    cfg = config.load(None, overrides)
    shape, _ = plan.model_shape(cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(shape)
    optimizer = _optimizer(model, cfg.train, torch.device("cpu"))
    batch = torch.randint(shape.vocab_size, (cfg.train.batch_size, cfg.data.block_size))

    def step():
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # AdamW's states exist from here on; thread pools and kernels are loaded
    base = bench.reset_peak()
    step()
    peaks.append(bench.max_rss() - base)
    del model, optimizer
    gc.collect()
print(json.dumps(peaks))
"""


def measured_step_peaks(cases: list[list[str]]) -> list[int]:
    """For each case (overrides), the RSS high-water mark of one training step beyond the memory before it.
    One fresh process where glibc maps every allocation over 64 KiB on its own (MALLOC_MMAP_THRESHOLD_), so
    freed buffers leave the resident set: the high-water mark is the peak of live memory, and one case's
    buffers are gone before the next."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], capture_output=True, text=True, env=env,
                         cwd=REPO, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_training_memory_matches_the_measured_cpu_peak(tmp_path: Path):
    """A logit-heavy GPT-2 and an activation-heavy llama with grouped-query attention."""
    llama = [f"model.name_or_path={gqa_llama(tmp_path)}", "data.block_size=64", "train.batch_size=16",
             "generation.prompt_tokens=16", "generation.max_new_tokens=16", "eval.prompt_tokens=16",
             "eval.max_new_tokens=16"]
    cases = [GPT2_LOGITS, llama]
    gpt2, gqa = (plan.estimate(config.load(None, c)) for c in cases)
    assert gpt2.logits > 4 * gpt2.activations and gqa.activations > 4 * gqa.logits  # each exercises its stage
    measured = measured_step_peaks(cases)
    for est, peak in zip((gpt2, gqa), measured):
        expected = est.grads_adamw // 3 + est.activations + est.logits  # gradients: 4 of AdamW's 12 bytes
        assert peak == pytest.approx(expected, rel=TOLERANCE), (peak / 2**20, expected / 2**20)


def test_parameters_and_grouped_query_kv_cache_from_a_shipped_shape():
    """Counts from the model built on the meta device: the public figure of Qwen2.5-1.5B."""
    qwen = plan.estimate(config.load(None, ["model.name_or_path=Qwen/Qwen2.5-1.5B", "generation.num_beams=5",
                                            "generation.prompt_tokens=64", "generation.max_new_tokens=64",
                                            "generation.batch_size=256", "train.precision=bf16"]))
    assert qwen.parameters == 1_543_714_304
    # 28 layers x 2 (K, V) x 2 key-value heads x 128 dims x 2 bytes, for 256 x 5 beams x 128 positions; with a
    # key and value per query head (12) it would be 6 times as much (26.2 GiB).
    assert qwen.kv_cache == 28 * 2 * 2 * 128 * 2 * 256 * 5 * 128
    assert round(qwen.kv_cache / 2**30, 1) == 4.4


@pytest.mark.parametrize("name", ["shumailov2024-opt125m-replace", "model-size-pythia-wikitext2",
                                  "lora-smollm2-1.7b-wikitext2"])
def test_plan_prints_every_shipped_gpu_config_offline(name: str, capsys):
    """(shumailov2024-opt125m-keep10 differs from -replace in mixing only.)"""
    assert main(["plan", str(REPO / "configs" / f"{name}.yaml")]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for column in ("parameters", "weights", "gen-0 copy", "grads+AdamW", "activations", "logits", "beam KV cache",
                   "peak GiB"):
        assert column in header
    if name.startswith("lora"):  # SmolLM2-1.7B's public count; LoRA r16 on all linear layers: 18,087,936
        assert out.splitlines()[2].split()[3] == "1,711.4M" and "LoRA r16: 18.1M trained" in out
    if name.startswith("model-size"):  # one row per model size (seeds and settings alike are grouped)
        assert [line.split()[0].split(",")[1] for line in out.splitlines()[2:5]] == [
            "model.name_or_path=pythia-70m", "model.name_or_path=pythia-160m", "model.name_or_path=pythia-410m"]


def test_gpu_check_projects_each_run_and_the_sweep(tmp_path: Path, capsys):
    check = {"device": "NVIDIA H100", "protocols": [{
        "config": "shumailov2024-opt125m-replace", "model": "opt-125m",
        "projected": {"run_hours": 2.0, "per_generation_s": 720.0}}]}
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(check))
    config_path = str(REPO / "configs" / "shumailov2024-opt125m-replace.yaml")
    assert main(["plan", config_path, f"--gpu-check={path}"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-2:] == ["time", "h"] and out.splitlines()[2].split()[-1] == "2.00"
    assert "10.0 GPU-hours for 5 runs, about 2.0 h as a Slurm array" in out
    # A run with 3 more generations: 3 x 720 s more.
    assert plan.run_hours(check, "shumailov2024-opt125m-replace", 9, 12) == (2.6, "opt-125m")


def test_kv_cache_counts_key_value_heads():
    # Qwen2.5-1.5B: 28 layers, 2 key-value heads of 128 (12 query heads): 2 x 28 x 2 x 128 x 2 bytes = 28,672
    # bytes a position in bf16; the paper's batch of 256 prompts x 5 beams x 128 positions: 4.375 GiB (with
    # 12 heads it would be 26.25).
    qwen = Qwen2Config(hidden_size=1536, num_attention_heads=12, num_key_value_heads=2, num_hidden_layers=28)
    assert plan.kv_cache_bytes(qwen, 256 * 5, 128, 2) == 28672 * 1280 * 128 == 4.375 * 2**30
    # OPT-125m at batch 4,096 x 5 beams: 2 x 12 x 768 x 2 bytes a position, 90 GiB: never tried on an 80 GB GPU.
    opt = OPTConfig(hidden_size=768, num_attention_heads=12, num_hidden_layers=12)
    assert plan.kv_cache_bytes(opt, 4096 * 5, 128, 2) == 90 * 2**30
