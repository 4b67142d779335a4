"""scripts/gpu_check.py: its projection by hand, its table, and (slow; CI runs it in .ci/run) the whole
command at toy sizes on the CPU."""

import json
from pathlib import Path

import pytest

from testbed import config

from .conftest import REPO, load_script

gpu_check = load_script("gpu_check")


def test_projection_scales_data_stages_by_blocks_and_training_by_epochs():
    measured = {"gen0": {"train": 10.0, "evaluate": 5.0},
                "gen1": {"generate": 20.0, "score": 2.0, "train": 10.0, "evaluate": 5.0},
                "total_s": 60.0, "train_blocks": gpu_check.WIKITEXT2_BLOCKS["train"] / 10}
    cfg = config.load(REPO / "configs" / "shumailov2024-opt125m-keep10.yaml")  # 10 epochs, models 0..9
    p = gpu_check.project(measured, cfg, settings=2)
    # gen 0: 10 s an epoch x 10 (WikiText-2 / measured) x 10 epochs + 5 s evaluation = 1005 s; each later
    # generation: 22 s x 10 + 10 s x 10 x 10 + 5 = 1225 s; overhead 60 - 52 = 8 s, once.
    assert p["gen0_s"] == pytest.approx(1005) and p["per_generation_s"] == pytest.approx(1225)
    run_s = 1005 + 9 * 1225 + 8
    assert p["run_hours"] == pytest.approx(run_s / 3600) and p["array_hours"] == p["run_hours"]
    assert p["runs"] == 10 and p["serial_hours"] == pytest.approx(10 * run_s / 3600)


def test_the_shipped_protocols_and_shapes_exist():
    for name, shape, extra, _ in gpu_check.PROTOCOLS:
        config.load(REPO / "configs" / f"{name}.yaml", extra)
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
    for stage in ("train", "beam5", "sampling", "evaluation"):
        assert {result["model"][stage][p]["tokens_per_s"] > 0 for p in ("fp32", "bf16")} == {True}
    assert result["model"]["beam5_largest"]["batch"] >= gpu_check.TINY_SIZES.paper_batch
    assert [p["config"] for p in result["protocols"]] == [name for name, *_ in gpu_check.PROTOCOLS]
    for p in result["protocols"]:
        assert set(p["measured"]["gen1"]) == {"generate", "score", "train", "evaluate"}
        assert p["projected"]["serial_hours"] > p["projected"]["array_hours"] > 0
    assert "protocol" in capsys.readouterr().out
