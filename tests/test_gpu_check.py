"""scripts/gpu_check.py: it measures the rate every run of the shipped GPU configs needs, a failing stage is
recorded while the next ones run, and (slow; CI runs it through scripts/gpu_rehearse.sh) the whole command
at toy sizes on the CPU, whose JSON `testbed plan` then reads."""

import json
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from testbed import config
from testbed.sweep import plan
from testbed.sweep.validate import sweep_configs

from .helpers import REPO, load_script

gpu_check = load_script("gpu_check")


def test_every_run_of_the_shipped_gpu_configs_finds_its_own_measured_rates():
    """Rates at exactly the items gpu_check measures: every part of every run then picks one of its own
    shape, precision, batch, sequence and variant (no note of a difference)."""
    items = gpu_check.items(gpu_check.GPU_SIZES)
    parameters = {name: 1000 + i for i, name in enumerate(dict.fromkeys(i.shape for i in items))}  # any, distinct
    rates = [plan.Rate(**i.need._asdict(), shape=i.shape, model_type="x", parameters=parameters[i.shape],
                       tokens_per_s=1.0) for i in items]
    check = plan.GpuCheck("check.json", "GPU", None, "full", rates)
    runs = [cfg for name in gpu_check.CONFIGS for _, cfg in sweep_configs(str(REPO / "configs" / f"{name}.yaml"), [])]
    assert len(runs) == 5 + 5 + 30 + 5
    for cfg in runs:
        model = plan.Model(cfg.model.name_or_path, "x", parameters[cfg.model.name_or_path])
        picked = plan.choices(cfg, model, check)
        assert {part: c.notes for part, c in picked.items()} == dict.fromkeys(picked, ()), cfg.model.name_or_path
    # Each rate once; OPT-125m's also under bf16 (its configs run fp32).
    assert len(items) == len(set((i.shape, i.need) for i in items)) == 26
    assert {i.need.precision for i in items if i.shape == gpu_check.OPT} == {"fp32", "bf16"}


def test_toy_sizes_measure_one_shape_per_architecture_at_small_batches():
    items = gpu_check.items(gpu_check.TINY_SIZES)
    assert list(dict.fromkeys(i.shape for i in items)) == [gpu_check.OPT, "EleutherAI/pythia-70m",
                                                           "HuggingFaceTB/SmolLM2-1.7B"]
    assert {(i.need.batch, i.need.sequence) for i in items} == {(8, 16)}


def test_the_protocols_and_shapes_exist():
    for name, shape, _ in gpu_check.PROTOCOLS:
        assert name in gpu_check.CONFIGS and name in gpu_check.GPU_SIZES.protocol_blocks
        assert plan.shape_file(shape).is_file()
    # The shapes built as the check builds them count the hub models' published parameters.
    assert gpu_check.parameters(gpu_check.shape(gpu_check.OPT, tiny=False)) == 125_239_296
    assert gpu_check.parameters(gpu_check.shape("EleutherAI/pythia-410m", tiny=False)) == 405_334_016


def test_a_failing_stage_is_recorded_and_the_next_ones_run(tmp_path: Path, monkeypatch):
    """main() with the measurements replaced: the first rate's and the first protocol's fail, the others
    return numbers; the JSON and the table hold both after every stage."""
    seen, calls = [], []

    def measure(item, s, model, sizes, device, accelerator):
        calls.append(item.need)
        if len(calls) == 1:
            raise RuntimeError("rate measurement broke")
        return {"tokens_per_s": 1000.0, "peak_gb": None, "reserved_gb": None}

    def protocol(name, shape, extra, sizes, work, device, result, out):
        seen.append(json.loads(out.read_text()))  # written before this stage
        if name == gpu_check.PROTOCOLS[0][0]:
            raise torch_oom("CUDA out of memory")
        identity = {"shape": shape, "model_type": "llama", "parameters": 1000}
        return {**identity, "measured": {"gen1": {"generate": 1.0, "score": 2.0, "train": 3.0, "evaluate": 4.0}},
                "planned": {"gen1": {"generate": 1.0, "score": 1.0, "train": 3.0, "evaluate": 4.0}},
                "startup_s": 5.0, "other_per_generation_s": 1.0, "save": {**identity, "bytes_per_s": 2**20}}

    torch_oom = gpu_check.torch.OutOfMemoryError
    monkeypatch.setattr(gpu_check, "measure", measure)
    monkeypatch.setattr(gpu_check, "largest", lambda item, *a: {"batch": 32, "skipped": None, "tokens_per_s": 9.0})
    monkeypatch.setattr(gpu_check, "protocol", protocol)
    monkeypatch.setattr("testbed.model.reproducible_cpu", lambda threads: None)  # torch-wide settings
    out = tmp_path / "check.json"
    assert gpu_check.main(["--cpu", "--tiny", "--out", str(out), "--work", str(tmp_path)]) == 0
    assert seen[0]["rates"][0]["error"] == "RuntimeError: rate measurement broke"
    assert seen[1]["protocols"][0]["error"] == "OutOfMemoryError: CUDA out of memory"
    result = json.loads(out.read_text())
    first, *rest = result["rates"]
    assert "measure" in first["traceback"] and all(r["tokens_per_s"] > 0 for r in rest)
    assert [r["batch"] for r in rest if r.get("largest")] == [32]
    assert "startup_s" not in result["protocols"][0] and [p["startup_s"] for p in result["protocols"][1:]] == [5, 5]
    text = (tmp_path / "check.txt").read_text()
    assert "failed: RuntimeError: rate measurement broke" in text and "failed: OutOfMemoryError" in text
    # testbed plan reads it: the failed rate is left out, the failed protocol too.
    check = plan.parse_gpu_check(result, str(out))
    assert len(check.rates) == len(rest) and len(check.saves) == 2
    assert [r["config"] for r in check.runs] == [name for name, *_ in gpu_check.PROTOCOLS[1:]]


@pytest.mark.slow
def test_cpu_tiny_runs_and_writes_its_json(tmp_path: Path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--cpu", "--tiny", "--out", str(out), "--work", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "tiny" and result["device"] == "cpu" and result["format"] == gpu_check.FORMAT
    assert not any("error" in r for r in [*result["rates"], *result["protocols"]])
    assert len(result["rates"]) == len(gpu_check.items(gpu_check.TINY_SIZES)) + 1  # and the largest batch
    assert all(r["tokens_per_s"] > 0 for r in result["rates"])
    assert [r["batch"] for r in result["rates"] if r.get("largest")] == [gpu_check.TINY_SIZES.largest_cap]
    assert [p["config"] for p in result["protocols"]] == [name for name, *_ in gpu_check.PROTOCOLS]
    for p in result["protocols"]:
        assert set(p["measured"]["gen1"]) == {"generate", "score", "curate_mix", "train", "evaluate"}
        assert set(p["planned"]["gen1"]) == {"generate", "score", "train", "evaluate"}
        assert 0 < p["measured"]["validation_s"][1] < p["measured"]["gen1"]["train"]
        assert p["measured"]["train_blocks"] == 16 and p["save"]["bytes_per_s"] > 0 and p["startup_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.txt"]  # work deleted
    assert "one generation of" in capsys.readouterr().out
    # testbed plan projects a shipped config from it, and says that its rates are toys.
    cfg = config.load(REPO / "configs" / "shumailov2024-opt125m-replace.yaml")
    report = plan.report(None, [], [("run", cfg)], plan.parse_gpu_check(result, str(out)))
    assert "the GPU check ran at toy sizes (tiny)" in report and "time (h)" in report


def test_check_imports_names_a_missing_or_unfit_package():
    """scripts/check_imports.py's one line per dependency (the whole check runs in scripts/gpu_rehearse.sh)."""
    check_imports = load_script("check_imports")
    assert check_imports.unmet(Requirement("numpy>=1.26")) is None
    assert check_imports.unmet(Requirement("numpy<1")) == f"numpy {np.__version__} does not satisfy numpy<1"
    assert check_imports.unmet(Requirement("no-such-package>=1")) == \
        "missing package no-such-package (no-such-package>=1)"
