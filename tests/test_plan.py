"""testbed plan: parameter counts and memory per stage from model configs, against the measured peak of a
training step on the CPU; the shipped configs offline; the time projected from a GPU check's rates by hand;
whether a run fits a GPU; and (slow) the package installed from its wheel."""

import json
import os
import shutil
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
    for column in ("parameters M", "weights GiB", "gen-0 copy GiB", "grads+AdamW GiB", "activations GiB",
                   "logits GiB", "beam KV cache GiB", "peak GiB"):
        assert column in header
    if name.startswith("lora"):  # SmolLM2-1.7B's public count; LoRA r16 on all linear layers: 18,087,936
        assert out.splitlines()[2].split()[3] == "1,711.4" and "LoRA r16: 18.1M trained" in out
    if name.startswith("model-size"):  # one row per model size (seeds and settings alike are grouped)
        assert [line.split()[0].split(",")[1] for line in out.splitlines()[2:5]] == [
            "model.name_or_path=pythia-70m", "model.name_or_path=pythia-160m", "model.name_or_path=pythia-410m"]
    assert out.splitlines()[-1].startswith("next: measure the GPU's rates once")


def test_a_sampling_config_shows_its_kv_cache_without_beams(capsys):
    """The default config samples with one beam: 256 sequences of 32 + 32 positions."""
    assert main(["plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "KV cache GiB" in lines[0] and "beam" not in lines[0]
    assert "(256x64)" in lines[2]


OPT = plan.Model("facebook/opt-125m", "opt", 125_239_296)


def rate(stage: str, precision: str, batch: int, tokens_per_s: float, variant: str = "",
         model: plan.Model = OPT) -> dict:
    return {"stage": stage, "shape": model.name, "model_type": model.model_type, "parameters": model.parameters,
            "precision": precision, "batch": batch, "sequence": 64, "variant": variant, "tokens_per_s": tokens_per_s}


# Round rates of OPT-125m in fp32 at the Shumailov configs' batches, a save at 500 MB/s, and an end-to-end run
# with a start-up of 60 s and 30 s of CPU work a generation.
CHECK = {"format": 2, "device": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2**30, "mode": "full",
         "rates": [rate("train", "fp32", 128, 100_000, "full"), rate("forward", "fp32", 256, 400_000),
                   rate("generate", "fp32", 256, 50_000, "beam"), rate("generate", "fp32", 256, 20_000, "one beam")],
         "protocols": [{"config": "shumailov2024-opt125m-keep10", "shape": OPT.name, "model_type": "opt",
                        "parameters": OPT.parameters, "startup_s": 60.0, "other_per_generation_s": 30.0,
                        "save": {"shape": OPT.name, "model_type": "opt", "parameters": OPT.parameters,
                                 "bytes_per_s": 5e8}}]}
REPLACE = REPO / "configs" / "shumailov2024-opt125m-replace.yaml"


def projection(overrides: list[str] = (), path: Path = REPLACE, check: dict = CHECK) -> plan.Projection:
    cfg = config.load(path, list(overrides))
    return plan.project(cfg, OPT, plan.data_counts(cfg), plan.parse_gpu_check(check, "check.json"))


def test_projection_of_the_shumailov_config_by_hand():
    """WikiText-2: 37,571 training blocks of 64 tokens, 3,922 valid, 4,494 test; models 0..9, 5 epochs each."""
    p = projection()
    train = 10 * 5 * 37571 * 64  # every generation trains on 37,571 blocks (replace: one 64-token example each)
    generated = 9 * 37571 * 64  # generations 1..9 continue every training block by 64 tokens
    evaluated = 10 * (4494 * 64 + 3 * 512 * 64) + 4494 * 64 + 2 * 512 * 64 + 4494 * 64  # + zero-shot, human baseline
    assert p.work == {"pretraining": 0, "train": train, "validation": 10 * 5 * 3922 * 64,
                      "generation": generated * 5, "scoring": generated, "evaluation": evaluated,
                      "eval samples": 10 * 512 * 64, "saves": 10 * 4 * OPT.parameters}
    assert p.seconds == pytest.approx({
        "train": train / 100_000, "validation": 10 * 5 * 3922 * 64 / 400_000, "generation": generated * 5 / 50_000,
        "scoring": generated / 400_000, "evaluation": evaluated / 400_000, "eval samples": 10 * 512 * 64 / 20_000,
        "saves": 10 * 4 * OPT.parameters / 5e8, "other": 60 + 9 * 30})
    assert p.hours == pytest.approx(3819.4929 / 3600) and not p.missing
    # The rates used are the ones measured: validation's at the eval batch (256 for the run's 128).
    assert {k: c.notes for k, c in p.rates.items()} == {
        "train": (), "validation": ("batch 256 for 128",), "generation": (), "scoring": (), "evaluation": (),
        "eval samples": ()}


def test_doubling_the_epochs_doubles_training_and_validation_only():
    base, double = projection(), projection(["train.epochs=10", "train.gen0_epochs=10"])
    for part in ("train", "validation"):
        assert double.seconds[part] == pytest.approx(2 * base.seconds[part])
    assert {k: v for k, v in double.seconds.items() if k not in ("train", "validation")} == \
        {k: v for k, v in base.seconds.items() if k not in ("train", "validation")}


def test_one_beam_changes_the_generation_part_by_the_rate_ratio():
    """A fifth of the beam-tokens at the one-beam rate (20,000 tokens/s against beam search's 50,000)."""
    beams, one = projection(), projection(["generation.num_beams=1"])
    assert one.seconds["generation"] == pytest.approx(beams.seconds["generation"] / 5 * 50_000 / 20_000)
    assert one.rates["generation"].rate.variant == "one beam"
    assert {k: v for k, v in one.seconds.items() if k != "generation"} == \
        {k: v for k, v in beams.seconds.items() if k != "generation"}


def test_a_renamed_copy_gets_the_same_projection(tmp_path: Path, capsys):
    copy = tmp_path / "my-own-name.yaml"
    copy.write_text(REPLACE.read_text())
    assert projection(path=copy) == projection()
    check = tmp_path / "gpu_check.json"
    check.write_text(json.dumps(CHECK))
    outputs = []
    for path in (REPLACE, copy):
        assert main(["plan", str(path), f"--gpu-check={check}"]) == 0
        outputs.append(capsys.readouterr().out.replace(str(path), "CONFIG"))
    assert outputs[0] == outputs[1]


def test_the_report_names_the_rates_the_sweep_and_the_submit_command(tmp_path: Path, capsys):
    check = tmp_path / "gpu_check.json"
    check.write_text(json.dumps(CHECK))
    assert main(["plan", str(REPLACE), "generation.batch_size=512", f"--gpu-check={check}"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("time (h)"))
    assert lines[header].split()[-1] == "total" and lines[header + 2].split()[-1] == "1.06"  # 3,819 s
    words = [" ".join(line.split()) for line in lines]
    assert "facebook/opt-125m generation 50,000 facebook/opt-125m fp32 batch 256 beam batch 256 for 512" in words
    assert "5.3 GPU-hours for 5 runs, about 1.1 h as a Slurm array" in out
    # 1.5 x 3,819 s = 95.5 min
    assert out.splitlines()[-1].startswith(f"next: testbed sweep {REPLACE} generation.batch_size=512 --launcher "
                                           "slurm --time-min 96")


def test_a_shape_not_measured_falls_back_to_the_nearest_and_says_how():
    pythia = plan.Model("EleutherAI/pythia-410m", "gpt_neox", 405_334_016)
    small = plan.Model("EleutherAI/pythia-70m", "gpt_neox", 70_426_624)
    measured = [plan.Rate(**{**rate("train", "bf16", 128, 90_000, "full"), "shape": "EleutherAI/pythia-160m",
                             "model_type": "gpt_neox", "parameters": 162_322_944}),
                plan.Rate(**rate("train", "bf16", 128, 100_000, "full"))]
    need = plan.Need("train", "bf16", 128, 64, "full")
    c = plan.pick(measured, pythia, need)  # the nearer in size of the two, scaled by the parameter ratio
    assert c.rate.shape == "EleutherAI/pythia-160m"
    assert c.tokens_per_s == pytest.approx(90_000 * 162_322_944 / 405_334_016)
    assert c.notes == ("nearest shape (162M parameters for 405M), x 0.40, the parameter ratio",)
    c = plan.pick(measured, small, need)  # a smaller model keeps the measured rate
    assert c.rate.shape == "facebook/opt-125m" and c.tokens_per_s == 100_000
    assert c.notes == ("nearest shape (125M parameters for 70.4M), as measured: the run's model is smaller",)
    c = plan.pick(measured, OPT, need._replace(precision="fp32", batch=64, variant="lora"))
    assert c.tokens_per_s == 100_000 and c.notes == ("bf16 for fp32", "full for lora", "batch 128 for 64")


def test_validation_passes_per_epoch_and_every_eval_every_steps():
    cfg = config.load(None, ["train.batch_size=10", "train.eval_every=4"])
    # 95 blocks: 10 steps an epoch; steps 4, 8, 12, 16 of 20 are mid-epoch (20 is an epoch end): 2 + 4
    assert plan.evaluations(cfg, 95, 2) == 6
    assert plan.evaluations(config.load(None, ["train.batch_size=10"]), 95, 2) == 2


@pytest.mark.parametrize("mixing, blocks", [
    (["mixing.strategy=replace"], 100 * 32 // 64),  # 100 examples of 32 tokens, packed into 64-token blocks
    (["mixing.strategy=fixed_fraction", "mixing.human_fraction=0.1"], (10 * 64 + 90 * 32) // 64),
    (["mixing.strategy=accumulate"], (100 * 64 + 2 * 100 * 32) // 64),  # generation 2: two synthetic sets
    (["mixing.strategy=accumulate_subsample"], 100 * (100 * 64 + 2 * 100 * 32) // 300 // 64),
])
def test_trained_blocks_follow_the_mixing(mixing: list[str], blocks: int):
    cfg = config.load(None, ["data.block_size=64", "generation.max_new_tokens=32", *mixing])
    counts = plan.Counts(train=100, valid=10, test=10, source="by hand")
    assert plan.trained_blocks(cfg, counts, 2) == blocks and plan.trained_blocks(cfg, counts, 0) == 100


def test_stage_seconds_sum_the_parts_of_each_stage():
    cfg = config.load(REPLACE)
    counts, check = plan.data_counts(cfg), plan.parse_gpu_check(CHECK, "check.json")
    s = plan.stage_seconds(cfg, OPT, counts, check, 1)
    assert s == pytest.approx({"train": (5 * 37571 * 64) / 100_000 + 5 * 3922 * 64 / 400_000,
                               "generate": 37571 * 64 * 5 / 50_000, "score": 37571 * 64 / 400_000,
                               "evaluate": (4494 * 64 + 3 * 512 * 64) / 400_000 + 512 * 64 / 20_000})


def test_an_older_gpu_check_asks_to_measure_again(tmp_path: Path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"device": "NVIDIA H100", "protocols": [{"config": "shumailov2024-opt125m-replace",
                                                                       "projected": {"run_hours": 2.0}}]}))
    assert main(["plan", str(REPLACE), f"--gpu-check={old}"]) == 2
    assert "older scripts/gpu_check.py (no per-shape rates); measure again" in capsys.readouterr().err


def test_fits_a_named_gpu_memory(capsys):
    """SmolLM2-1.7B with full fine-tuning peaks at 60.0 GiB in training, 43.5 GiB in generation."""
    lora = str(REPO / "configs" / "lora-smollm2-1.7b-wikitext2.yaml")
    full = ["train.lora.enabled=false", "train.gradient_checkpointing=false", "generation.batch_size=256",
            "eval.batch_size=256", "train.batch_size=128"]
    for memory, verdict in (("80GiB", "yes"), ("64.5GB", "tight"), ("48GiB", "no")):
        assert main(["plan", lora, *full, f"--gpu-memory={memory}"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[2].split()[-1] == verdict, (memory, lines[2])
    assert lines[-1].startswith("next: training does not fit: lower train.batch_size")
    assert plan.parse_memory("80GiB") == 80 * 2**30 and plan.parse_memory("80 GB") == 80 * 10**9
    assert main(["plan", lora, "--gpu-memory=80"]) == 2
    assert "--gpu-memory 80: expected a size with its unit" in capsys.readouterr().err


def test_kv_cache_counts_key_value_heads():
    # Qwen2.5-1.5B: 28 layers, 2 key-value heads of 128 (12 query heads): 2 x 28 x 2 x 128 x 2 bytes = 28,672
    # bytes a position in bf16; the paper's batch of 256 prompts x 5 beams x 128 positions: 4.375 GiB (with
    # 12 heads it would be 26.25).
    qwen = Qwen2Config(hidden_size=1536, num_attention_heads=12, num_key_value_heads=2, num_hidden_layers=28)
    assert plan.kv_cache_bytes(qwen, 256 * 5, 128, 2) == 28672 * 1280 * 128 == 4.375 * 2**30
    # OPT-125m at batch 4,096 x 5 beams: 2 x 12 x 768 x 2 bytes a position, 90 GiB: never tried on an 80 GB GPU.
    opt = OPTConfig(hidden_size=768, num_attention_heads=12, num_hidden_layers=12)
    assert plan.kv_cache_bytes(opt, 4096 * 5, 128, 2) == 90 * 2**30


@pytest.mark.slow
def test_the_installed_wheel_plans_a_shipped_gpu_config_offline(tmp_path: Path):
    """The package built as a wheel and installed (no-deps) into a fresh venv that sees this interpreter's
    packages (torch etc.) but not this checkout: `testbed plan` run outside the checkout, with an empty hub
    cache, finds the model's shape and the lock among the package's own files."""
    pytest.importorskip("setuptools")  # the build backend, here: nothing is downloaded
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "sweeps", "build", "*.egg-info", "__pycache__", ".whl", ".*_cache"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(src)],
                   check=True, cwd=tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (wheel,) = (tmp_path / "wheels").glob("testbed-*.whl")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True)
    # This interpreter's site-packages (a venv's are not the system's) after the new venv's own: a path line
    # in a .pth file adds the directory without running the .pth files in it (an editable testbed's finder).
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import testbed.numerics as n; print(n.__file__, n.LOCK_FILE.is_file())"],
                           capture_output=True, text=True, env=env, cwd=elsewhere, check=True).stdout.split()
    assert where == [f"{site}/testbed/numerics.py", "True"]
    out = subprocess.run([venv / "bin" / "testbed", "plan", str(REPLACE)], capture_output=True, text=True, env=env,
                         cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert "model facebook/opt-125m (shape: facebook--opt-125m.json)" in out.stdout
    assert out.stdout.splitlines()[2].split()[3:5] == ["125.2", "0.47"]  # parameters M, weights GiB
