"""The paper path rehearsed on a CPU: both Shumailov et al. configs, scaled down, on a checkpoint shaped like
OPT-125m (fp16 safetensors, a tokenizer that puts </s> before every text) and raw WikiText-like files with
blank lines; prompt_tokens == block_size == max_new_tokens, beam search; keep-10% under bf16 autocast with
the code's repetition penalty. Then paper-check, on those runs and on runs with hand-set numbers."""

import json
import math
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from safetensors.torch import load_file

from testbed import config, rundir
from testbed.cli import main

from .helpers import REPO, load_script

rehearse = load_script("rehearse_paper")
EXTRA = {"shumailov2024-opt125m-keep10": ["train.precision=bf16", "generation.repetition_penalty=3.0"]}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rehearsal")
    data = rehearse.write_corpus(out / "data", None)
    tok = rehearse.opt_like_tokenizer(None, (data / "train.txt").read_text().splitlines(), vocab_size=400)
    model = rehearse.save_opt_checkpoint(out / "opt-fp16", tok, layers=1, width=32, heads=2, context=160)
    *runs, _ = rehearse.commands(model, data, out / "runs", "fp32")
    for args in runs:
        assert main([*args, *EXTRA.get(Path(args[1]).stem, [])]) == 0
    return out


def _run(rehearsal: Path, name: str) -> Path:
    return rehearsal / "runs" / f"shumailov2024-opt125m-{name}"


@pytest.mark.parametrize("name", ["replace", "keep10"])
def test_paper_configs_run_end_to_end(rehearsal: Path, name: str):
    run = _run(rehearsal, name)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["generation"]["prompt_tokens"] == cfg["data"]["block_size"] == cfg["generation"]["max_new_tokens"]
    assert cfg["data"]["preprocessing"] == "shumailov2024" and cfg["generation"]["num_beams"] == 5
    assert all((run / f"gen_{g:03d}" / "COMPLETE").is_file() for g in range(3))
    # The checkpoint came in fp16; the trained weights are fp32 master weights.
    assert {v.dtype for v in load_file(rehearsal / "opt-fp16" / "model.safetensors").values()} == {torch.float16}
    assert {v.dtype for v in load_file(run / "gen_002" / "model" / "model.safetensors").values()} == {torch.float32}
    # min_new_tokens == max_new_tokens: every synthetic example is exactly one block of new tokens.
    for g in (1, 2):
        ids = datasets.load_from_disk(str(run / f"gen_{g:03d}" / "synthetic"))["input_ids"][:]
        assert ids and {len(r) for r in ids} == {cfg["generation"]["max_new_tokens"]}
    # The human references of the sample metrics come from the text after the prompt: never empty.
    baseline = json.loads((run / "human_baseline.json").read_text())
    for key in ("distinct_1", "distinct_2", "self_bleu", "entropy", "synthetic_ppl_gen0_mean"):
        assert baseline[key] is not None and math.isfinite(baseline[key]) and baseline[key] > 0, key
    assert len(baseline["ppl_gen0_per_sequence"]) > 0
    rows = rundir.read_jsonl(run / "metrics.jsonl")
    assert rows[0]["ppl_human_zero_shot"] > rows[0]["ppl_human"] > 1  # generation 0 learnt something
    assert "ppl_human_zero_shot" not in rows[1]
    composition = rows[1]["train_composition"]
    if name == "keep10":
        assert composition["human"] == round(0.1 * sum(composition.values()))
    else:
        assert set(composition) == {"synthetic@1"}


def test_the_run_used_the_tokenizers_bos(rehearsal: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_run(rehearsal, "replace") / "tokenizer")
    assert tok("the river")["input_ids"][0] == tok.bos_token_id == tok.eos_token_id


def test_paper_check_runs_on_the_rehearsal(rehearsal: Path, capsys):
    code = main(["paper-check", str(rehearsal / "runs")])
    out = capsys.readouterr().out
    assert code == 1  # random weights: the paper's perplexities do not hold
    assert "zero-shot ppl (base model)" in out and "NO" in out
    assert "deviation: replace: change measured at generation 2 (paper: 9)" in out
    assert "deviation: keep10: generation.repetition_penalty 3.0 (paper: 1.0)" in out
    assert "deviation: keep10: train.precision bf16 (paper: fp32)" in out


def _fake_run(root: Path, name: str, setting: str, ppl: list[float], zero_shot: float,
              overrides: tuple[str, ...] = ()) -> None:
    """A finished run of the paper config `setting` (with `overrides`) and hand-set perplexities."""
    cfg = config.load(REPO / "configs" / f"shumailov2024-opt125m-{setting}.yaml", list(overrides))
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(config.to_yaml(cfg))
    rows = [{"generation": g, "ppl_human": p, **({"ppl_human_zero_shot": zero_shot} if g == 0 else {})}
            for g, p in enumerate(ppl)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


GROW = [34.0 + 2.5 * g for g in range(10)]  # +22.5 by generation 9


def test_paper_check_verdicts(tmp_path: Path, capsys):
    _fake_run(tmp_path / "ok", "r0", "replace", GROW, 116.0)
    _fake_run(tmp_path / "ok", "r1", "replace", [p + 1 for p in GROW], 114.0)
    _fake_run(tmp_path / "ok", "k0", "keep10", [34.0 + 0.4 * g for g in range(10)], 115.0)
    assert main(["paper-check", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "6 of 6 hold: the reproduction agrees" in out and "deviat" not in out
    assert "+22.5 ± 0.0" in out and "115.0 ± 1.4" in out  # mean ± std over the two replace seeds

    _fake_run(tmp_path / "flat", "r0", "replace", [34.0] * 10, 115.0)  # no collapse: the change does not hold
    assert main(["paper-check", str(tmp_path / "flat")]) == 1
    assert "ppl change by the last generation  +20 to +28  [14, 34]       +0.0" in capsys.readouterr().out

    _fake_run(tmp_path / "other", "a0", "replace", [34.0] * 3, 115.0, ("mixing.strategy=accumulate",))
    assert main(["paper-check", str(tmp_path / "other")]) == 2  # a user error: no paper setting there


def test_paper_check_lists_every_deviation(tmp_path: Path, capsys):
    """Numbers that agree on runs of another protocol are no reproduction: each deviating key is listed."""
    changed = ("train.epochs=3", "train.init=gen0", "generation.num_beams=1", "generation.min_new_tokens=0",
               "data.preprocessing=clean", "train.lr=1e-4", "train.schedule=constant", "train.precision=bf16",
               "generation.repetition_penalty=3.0", "mixing.fixed_subset=true", "mixing.complementary=true")
    _fake_run(tmp_path, "k0", "keep10", [34.0 + 0.4 * g for g in range(10)], 115.0, changed)
    _fake_run(tmp_path, "k1", "keep10", [34.0 + 0.4 * g for g in range(10)], 115.0, ("train.epochs=4",))
    assert main(["paper-check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    listed = [line.removeprefix("deviation: keep10: ") for line in out.splitlines() if line.startswith("deviation:")]
    assert listed == ["data.preprocessing clean (paper: shumailov2024)", "generation.min_new_tokens 0 (paper: 64)",
                      "generation.num_beams 1 (paper: 5)", "generation.repetition_penalty 3.0 (paper: 1.0)",
                      "mixing.fixed_subset true (paper: false)", "mixing.complementary true (paper: false)",
                      "train.init gen0 (paper: base)", "train.lr 0.0001 (paper: 2e-05)",
                      "train.schedule constant (paper: cosine)", "train.precision bf16 (paper: fp32)",
                      "train.epochs 3, 4 (paper: 10)"]
    assert "yes, but deviates" in out and " yes\n" not in out
    assert "3 of 3 hold, on runs that deviate from the paper's protocol at 11 keys (listed above): " \
           "not a reproduction" in out


@pytest.mark.parametrize("setting", ["replace", "keep10"])
def test_paper_configs_hold_the_protocol_paper_check_compares(setting: str):
    from testbed.report.paper import PROTOCOL, SETTING_PROTOCOL

    cfg = config.flatten(config.load(REPO / "configs" / f"shumailov2024-opt125m-{setting}.yaml").to_dict())
    expected = {**PROTOCOL, **SETTING_PROTOCOL[setting]}
    assert {k: cfg[k] for k in expected} == expected
