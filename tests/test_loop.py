import json
import math
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from testbed import rundir
from testbed.cli import main

ROW_KEYS = {"generation", "ppl_human", "distinct_1", "distinct_2", "distinct_3", "distinct_4", "self_bleu",
            "rep_4", "entropy", "tail_coverage", "synthetic_ppl_gen0_mean", "synthetic_ppl_gen0_median",
            "synthetic_ppl_gen0_std", "synthetic_ppl_gen0_p05", "synthetic_ppl_gen0_p95"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from .helpers import TINY

    out = tmp_path_factory.mktemp("runs")
    assert main(["run", *TINY, f"run.out_dir={out}", "run.name=e2e", "mixing.strategy=fixed_fraction",
                 "mixing.human_fraction=0.5"]) == 0
    return out / "e2e"


def test_run_directory_layout(finished_run: Path):
    for name in ("config.yaml", "metrics.jsonl", "human_baseline.json", "tokenizer", "report.md", "metrics-fit.png",
                 "synthetic_ppl_gen0.png"):
        assert (finished_run / name).exists(), name
    for g in range(3):
        d = finished_run / f"gen_{g:03d}"
        assert (d / "COMPLETE").exists() and (d / "samples.jsonl").exists()
        assert (d / "model" / "model.safetensors").exists()
        assert not list((d / "model").glob("*.bin"))
    assert not (finished_run / "gen_000" / "synthetic").exists()
    synth = datasets.load_from_disk(str(finished_run / "gen_002" / "synthetic"))
    assert set(synth["source"][:]) == {"synthetic"} and set(synth["generation"][:]) == {2}
    assert all(math.isnan(p) or p > 1 for p in synth["ppl_gen0"][:])
    assert set(synth["dropped_by"][:]) == {""} and not any(synth["flagged"][:])  # no curation configured


# The early-warning signals of every row (evaluation.model_metrics and sample_metrics).
SIGNALS = {"token_entropy", "confident_share", "effective_rank", "kl_per_word", "loglik_std_gen0", "tail_token_mass",
           "unigram_kl", "embedding_diversity", "ppl_self", "loglik_std_self", "tail_mass_lost", "ppl_gap"}
# null by construction: 8-token samples of a tiny model seldom hold a complete sentence, let alone a
# grammatical one (true NLL per word, grammatical rate); a 300-token vocabulary has few targets outside the
# eval.tail_tokens=256 most frequent (tail perplexity and its noise); no watermark, no z-scores.
MAY_BE_NULL = {"true_nll_per_word", "grammatical_rate", "ppl_human_tail", "noise_ppl_human_tail"}
NO_WATERMARK = {"z_synthetic_mean", "z_human_mean"}
GEN0_NULL = {"synthetic_ppl_gen0_mean", "synthetic_ppl_gen0_median", "synthetic_ppl_gen0_std",
             "synthetic_ppl_gen0_p05", "synthetic_ppl_gen0_p95", "synthetic_mean_length"}


def test_metrics_rows_are_finite(finished_run: Path):
    """Every value of every row is a finite number (NaN would be written as null), but for those null by
    construction; the signals included."""
    rows = rundir.read_jsonl(finished_run / "metrics.jsonl")
    assert [r["generation"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert set(r) >= ROW_KEYS | SIGNALS
        null = {k for k, v in r.items() if v is None}
        assert null - MAY_BE_NULL == (GEN0_NULL if r["generation"] == 0 else NO_WATERMARK), r["generation"]
        for key, value in r.items():
            if key not in ("train_composition", "phase") and value is not None:
                assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
        for key in ROW_KEYS - GEN0_NULL - {"generation", "ppl_gap"}:
            assert r[key] >= 0, (key, r[key])
        assert r["ppl_human"] > 1 and r["ppl_self"] > 1 and r["effective_rank"] >= 1
        assert r["phase"] in ("none", "early", "late") and r["ppl_human_head"] > 1
    composition = rows[1]["train_composition"]  # fixed_fraction 0.5: half of the human set's size is human
    assert composition["human"] == round(0.5 * rows[0]["train_composition"]["human"])
    assert composition["human"] + composition["synthetic@1"] == rows[0]["train_composition"]["human"]
    baseline = json.loads((finished_run / "human_baseline.json").read_text())
    assert baseline["generation"] == "human" and 0 < baseline["distinct_1"] <= 1


def test_parameters_changed_and_checkpoint_reloads(finished_run: Path):
    gen0 = load_file(finished_run / "gen_000" / "model" / "model.safetensors")
    gen2 = load_file(finished_run / "gen_002" / "model" / "model.safetensors")
    assert any(not torch.equal(gen0[k], gen2[k]) for k in gen0)
    model = AutoModelForCausalLM.from_pretrained(finished_run / "gen_002" / "model")
    tok = AutoTokenizer.from_pretrained(finished_run / "gen_002" / "model")
    ids = tok("hello", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tok)
    for k, v in model.state_dict().items():
        if k in gen2:
            assert torch.equal(v, gen2[k])


def test_existing_run_is_never_overwritten(finished_run: Path, capsys):
    from .helpers import TINY

    before = (finished_run / "metrics.jsonl").read_bytes()
    assert main(["run", *TINY, f"run.out_dir={finished_run.parent}", "run.name=e2e"]) == 2
    assert "already exists: pass --resume" in capsys.readouterr().err
    assert (finished_run / "metrics.jsonl").read_bytes() == before


def test_rows_carry_phases_and_generation_0_its_noise_band(finished_run: Path):
    from testbed.metrics.phases import SIGNALS, phases, row_band

    rows = [json.loads(x) for x in (finished_run / "metrics.jsonl").read_text().splitlines()]
    band = row_band(rows[0])
    assert {"ppl_human_head", "tail_coverage", "entropy", "grammatical_rate", "loglik_std_gen0"} <= set(band)
    assert all(v >= 0 for v in band.values()) and band["entropy"] > 0
    assert [r["phase"] for r in rows] == phases(rows, band) and rows[0]["phase"] == "none"
    assert not any(k.startswith("noise_") for r in rows[1:] for k in r)  # computed once, at generation 0
    assert set(band) <= set(SIGNALS)
    assert all(r["ppl_human_head"] > 1 for r in rows)
