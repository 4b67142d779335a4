"""Every shipped config runs end to end, scaled down: the sweeps with every setting (one seed, one
generation, tiny sizes), the WikiText config on a small corpus. (The paper configs: tests/test_paper.py;
the default: every tiny run.)"""

import os
from pathlib import Path

import pytest

from testbed import rundir
from testbed.cli import main

from .helpers import REPO, TINY


@pytest.mark.parametrize("name", [pytest.param("defences-sweep-tiny-cpu", marks=pytest.mark.slow),  # 11 settings
                                  "mixing-sweep-tiny-cpu"])
def test_sweep_configs_run_every_setting(name: str, tmp_path: Path):
    """Each setting of the sweep, in this process, one seed and one generation at tiny sizes; the settings
    share the first one's generation 0, as the sweep's runs do (the launchers: tests/test_sweep_*.py)."""
    from testbed import config as config_module
    from testbed.sweep.grid import expand

    # data.max_train_blocks leaves the fresh-data setting an unseen pool in the tiny corpus.
    scaled = [*TINY, "run.generations=1", "data.max_train_blocks=30", f"run.out_dir={tmp_path}"]
    path = REPO / "configs" / f"{name}.yaml"
    runs = [r for r in expand(config_module.load(path), {}) if "run.seed=0" in r.overrides]
    assert len(runs) == len(config_module.load(path).sweep.settings) >= 4
    for i, r in enumerate(runs):
        shared = [f"run.prefix_from={tmp_path / 'run0'}"] if i else []
        assert main(["run", str(path), *r.overrides, *scaled, *shared, f"run.name=run{i}"]) == 0, r.name
        rows = rundir.read_jsonl(tmp_path / f"run{i}" / "metrics.jsonl")
        assert [row["generation"] for row in rows] == [0, 1] and rows[1]["ppl_human"] > 1
    assert main(["report", str(tmp_path)]) == 0


def test_wikitext_config_runs_on_a_small_corpus(text_corpus: Path, tmp_path: Path):
    scaled = ["run.generations=1", "tokenizer.vocab_size=300", "model.layers=1", "model.width=32", "model.heads=2",
              "train.gen0_epochs=1", "train.epochs=1", "eval.num_samples=8", "data.block_size=16",
              "generation.prompt_tokens=8", "generation.max_new_tokens=8", "eval.prompt_tokens=4",
              "eval.max_new_tokens=8", "eval.tail_rank=20"]
    assert main(["run", str(REPO / "configs" / "wikitext2-tiny-cpu.yaml"), f"data.path={text_corpus}", *scaled,
                 f"run.out_dir={tmp_path}", "run.name=w"]) == 0
    assert (tmp_path / "w" / "gen_001" / "COMPLETE").is_file()


@pytest.mark.slow  # about 20 generations of tiny runs
@pytest.mark.parametrize("name", ["recovery-sweep-tiny-cpu", "web-scenario-tiny-cpu", "pretrained-recovery-tiny-cpu"])
def test_schedule_sweep_configs_run_every_setting(name: str, tmp_path: Path):
    """Each setting of the sweeps whose settings carry schedules, one seed at tiny sizes, each run as long as
    its schedule needs (to its last entry: the recovery runs heal for one generation); the runs share their
    common prefixes, as the sweep's do."""
    from testbed import config as config_module
    from testbed.sweep.grid import expand, share_prefixes

    path = REPO / "configs" / f"{name}.yaml"
    scaled = [o for o in TINY if not o.startswith("run.generations=")] + ["data.max_train_blocks=30"]
    if config_module.load(path).pretrain.source != "none":
        scaled += ["pretrain.sentences=600", "pretrain.epochs=1"]
    runs = [r for r in expand(config_module.load(path), {}) if "run.seed=0" in r.overrides]
    for r in runs:
        schedule = config_module.load(path, r.overrides).mixing.schedule
        r.overrides += [*scaled, f"run.generations={schedule[-1]['from_generation'] if schedule else 1}"]
    configs = [config_module.load(path, r.overrides) for r in runs]
    for r in share_prefixes(runs, configs, tmp_path):
        assert main(["run", str(path), *r.overrides, f"run.out_dir={tmp_path}", f"run.name={r.name}"]) == 0, r.name
        rows = rundir.read_jsonl(tmp_path / r.name / "metrics.jsonl")
        cfg = config_module.load(path, r.overrides)
        assert [row["generation"] for row in rows] == list(range(cfg.run.generations + 1))
        for row in rows[1:]:  # each generation's human share is the one its schedule gives
            settings, composition = cfg.mixing.at(row["generation"]), row["train_composition"]
            if settings.strategy == "fixed_fraction":
                n = round(settings.human_fraction * sum(composition.values()))
                assert composition.get("human", 0) == n, (r.name, row["generation"])
    assert main(["report", str(tmp_path)]) == 0
    if "recovery" in name:
        assert "## Recovery" in (tmp_path / "report.md").read_text()
    if name.startswith("pretrained"):  # one base for every run; each scored out of domain
        assert len({os.stat(tmp_path / r.name / "base" / "model" / "model.safetensors").st_ino for r in runs}) == 1
        assert "## Out of domain" in (tmp_path / "report.md").read_text()
