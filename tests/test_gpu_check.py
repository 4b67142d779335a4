"""scripts/gpu_check.py: its projection and KV-cache sizes by hand, its run counts, a failing stage recorded
while the next ones run, and (slow; CI runs it through scripts/gpu_rehearse.sh) the whole command at toy
sizes on the CPU."""

import json
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from testbed import config

from .helpers import REPO, load_script

gpu_check = load_script("gpu_check")


def test_projection_scales_data_stages_by_blocks_training_by_epochs_and_validation_by_epochs_only():
    measured = {"gen0": {"train": 12.0, "evaluate": 5.0},
                "gen1": {"generate": 20.0, "score": 2.0, "train": 12.0, "evaluate": 5.0},
                "validation_s": [2.0, 2.0], "save_s": 1.5, "total_s": 60.0,
                "train_blocks": gpu_check.WIKITEXT2_BLOCKS["train"] / 10}
    cfg = config.load(REPO / "configs" / "shumailov2024-opt125m-keep10.yaml")  # 10 epochs, models 0..9
    p = gpu_check.project(measured, cfg, runs=5)
    # gen 0: training steps (12 - 2 s validation) x 10 (WikiText-2 / measured) x 10 epochs = 1000 s, validation
    # 2 s x 10 epochs = 20 s, evaluation 5 s: 1025 s. Each later generation: generation and scoring 22 s x 10,
    # training 1000 s, validation 20 s, evaluation 5 s: 1245 s. Saves: 10 generations x 1.5 s. The rest of the
    # measured run, once: 60 - 17 - 39 - 2 x 1.5 = 1 s.
    assert p["gen0_s"] == pytest.approx(1025) and p["per_generation_s"] == pytest.approx(1245)
    assert p["saves_s"] == pytest.approx(15) and p["overhead_s"] == pytest.approx(1)
    run_s = 1025 + 9 * 1245 + 15 + 1
    assert p["run_hours"] == pytest.approx(run_s / 3600) and p["array_hours"] == p["run_hours"]
    assert p["runs"] == 5 and p["serial_hours"] == pytest.approx(5 * run_s / 3600)


def test_each_config_projects_its_sweeps_run_count():
    counts = {p: gpu_check.run_count(config.load(REPO / "configs" / f"{p}.yaml", extra))
              for _, _, extra, projected in gpu_check.PROTOCOLS for p in projected}
    assert counts == {"shumailov2024-opt125m-keep10": 5, "shumailov2024-opt125m-replace": 5,
                      "model-size-pythia-wikitext2": 30,  # 2 settings x 3 sizes x 5 seeds
                      "lora-smollm2-1.7b-wikitext2": 5}


def test_a_failing_stage_is_recorded_and_the_next_ones_run(tmp_path: Path, monkeypatch):
    """main() with the measurements replaced: the model's and the first protocol's fail, the others return
    numbers; the JSON and the table hold both after every stage."""
    seen = []

    def measure_model(shape, sizes, device, check, out):
        raise RuntimeError("model measurement broke")

    def protocol(name, shape, extra, projected, sizes, work, device):
        seen.append(json.loads((tmp_path / "check.json").read_text()))  # written before this stage
        if name == gpu_check.PROTOCOLS[0][0]:
            raise torch_oom("CUDA out of memory")
        return {"measured": {"gen1": {"generate": 1.0, "score": 2.0, "train": 3.0, "evaluate": 4.0}},
                "projected": {p: {"run_hours": 1.5, "runs": 30, "serial_hours": 45.0, "array_hours": 1.5}
                              for p in projected}}

    torch_oom = gpu_check.torch.OutOfMemoryError
    monkeypatch.setattr(gpu_check, "measure_model", measure_model)
    monkeypatch.setattr(gpu_check, "protocol", protocol)
    monkeypatch.setattr("testbed.model.reproducible_cpu", lambda threads: None)  # torch-wide settings
    out = tmp_path / "check.json"
    assert gpu_check.main(["--cpu", "--tiny", "--out", str(out), "--work", str(tmp_path)]) == 0
    assert seen[0]["model"]["error"] == "RuntimeError: model measurement broke"
    assert "protocol" not in seen[0] and seen[1]["protocols"][0]["error"] == "OutOfMemoryError: CUDA out of memory"
    result = json.loads(out.read_text())
    first, *rest = result["protocols"]
    assert "measure_model" in result["model"]["traceback"] and "error" in first and "projected" not in first
    assert [p["projected"][p["config"]]["runs"] for p in rest] == [30, 30]
    text = (tmp_path / "check.txt").read_text()
    assert "failed: OutOfMemoryError: CUDA out of memory" in text and "model-size-pythia-wikitext2 (" in text


def test_the_shipped_protocols_and_shapes_exist():
    for name, shape, _, projected in gpu_check.PROTOCOLS:
        assert name in projected and name in gpu_check.GPU_SIZES.protocol_blocks
        assert shape in gpu_check.FULL and shape in gpu_check.TINY
    # OPT-125m's shape: 125M parameters with its 50,272-row embedding (counted without building it).
    m = gpu_check.FULL["opt-125m"].model
    h = m.width
    layer = 4 * (h * h + h) + (4 * h * h + 4 * h) + (4 * h * h + h) + 2 * 2 * h  # attention, MLP, 2 layer norms
    embed = (gpu_check.FULL["opt-125m"].vocab + 2050) * h  # tokens, and positions (OPT's offset of 2)
    assert embed + m.layers * layer + 2 * h == pytest.approx(125.2e6, rel=0.001)


@pytest.mark.slow
def test_cpu_tiny_runs_and_writes_its_json(tmp_path: Path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--cpu", "--tiny", "--out", str(out), "--work", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "tiny" and result["device"] == "cpu"
    assert "error" not in result["model"] and not any("error" in p for p in result["protocols"])
    for stage in ("train", "beam5", "sampling", "evaluation"):
        assert {result["model"][stage][p]["tokens_per_s"] > 0 for p in ("fp32", "bf16")} == {True}
    assert result["model"]["train"]["fp32"]["validation_s"] > 0
    assert result["model"]["beam5_largest"]["batch"] == gpu_check.TINY_SIZES.largest_cap
    assert [p["config"] for p in result["protocols"]] == [name for name, *_ in gpu_check.PROTOCOLS]
    for p in result["protocols"]:
        assert set(p["measured"]["gen1"]) == {"generate", "score", "curate_mix", "train", "evaluate"}
        assert 0 < p["measured"]["validation_s"][1] < p["measured"]["gen1"]["train"]
        assert p["measured"]["save_s"] > 0
        for j in p["projected"].values():
            assert j["serial_hours"] > j["array_hours"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.txt"]  # work deleted
    assert "config (measured on" in capsys.readouterr().out


def test_check_imports_names_a_missing_or_unfit_package():
    """scripts/check_imports.py's one line per dependency (the whole check runs in scripts/gpu_rehearse.sh)."""
    check_imports = load_script("check_imports")
    assert check_imports.unmet(Requirement("numpy>=1.26")) is None
    assert check_imports.unmet(Requirement("numpy<1")) == f"numpy {np.__version__} does not satisfy numpy<1"
    assert check_imports.unmet(Requirement("no-such-package>=1")) == \
        "missing package no-such-package (no-such-package>=1)"
