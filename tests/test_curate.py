import math

import numpy as np
import pytest
import torch

from testbed import config, language, mixing, numerics, rundir
from testbed.config import CurateConfig, LanguageConfig, ModelConfig, WatermarkConfig
from testbed.curate import (
    Deduplicator,
    RunDeduplication,
    grammatical,
    importance_resample,
    oracle_flags,
    perplexity_ceiling,
    perplexity_filter,
    watermark_z,
)
from testbed.generate import watermarking_config
from testbed.mixing import synthetic_examples
from testbed.model import build_model, train_bpe


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [f"w{i}" for i in rng.integers(0, 500, size=n)]


def test_minhash_finds_one_word_edits_and_ignores_unrelated_texts():
    rng = np.random.default_rng(0)
    texts, expected = [], []
    for _ in range(20):
        base = _words(rng, 80)
        edited = list(base)
        edited[int(rng.integers(80))] = "edited"
        texts += [" ".join(base), " ".join(edited), " ".join(_words(rng, 80))]
        expected += [True, False, True]
    assert Deduplicator(CurateConfig(dedup="minhash")).keep(texts).tolist() == expected


def test_deduplicator_remembers_earlier_generations():
    exact = Deduplicator(CurateConfig(dedup="exact"))
    assert exact.keep(["The cat  sat", "the cat sat", "a dog"]).tolist() == [True, False, True]
    assert exact.keep(["A DOG", "a bird"]).tolist() == [False, True]  # seen in the previous call
    assert Deduplicator(CurateConfig()).keep(["x", "x"]).tolist() == [True, True]  # dedup: none


def test_deduplication_reaches_back_only_while_the_pool_accumulates(tmp_path):
    """Generation 1 replaces (its own deduplicator); from generation 2 the pool accumulates: one index, rebuilt
    from generation 1's saved set (its texts that passed deduplication), kept for generation 3."""
    cfg = config.load(None, ["curate.dedup=exact", "mixing.strategy=replace",
                             "mixing.schedule=[{from_generation: 2, strategy: accumulate}]"])
    saved = rundir.gen_dir(tmp_path, 1) / "synthetic"
    saved.parent.mkdir()
    texts = ["a cat", "a dog", "a cat"]
    mixing.save_synthetic(saved, synthetic_examples(np.ones((3, 2)), np.full(3, 2), 1), texts,
                          {"dropped_by": np.array(["", "perplexity", "dedup"])})
    runs = RunDeduplication(cfg, tmp_path)
    assert runs.of_generation(1).keep(["a cat", "a cat"]).tolist() == [True, False]
    assert runs.of_generation(1).keep(["a cat"]).tolist() == [True]  # a new one: generation 1 does not accumulate
    index = runs.of_generation(2)
    assert index.keep(["A  cat", "a dog", "a bird"]).tolist() == [False, False, True]
    assert runs.of_generation(3) is index and index.keep(["a bird"]).tolist() == [False]


@pytest.mark.parametrize("dedup", ["exact", "minhash"])
def test_a_rebuilt_index_holds_what_passed_deduplication(dedup):
    """On resume the index holds every earlier text that passed deduplication, also those a later filter
    dropped: a duplicate of one of them is dropped as in the uninterrupted run."""
    cfg = CurateConfig(dedup=dedup)
    texts = ["the cat sat on the mat today", "the cat sat on the mat today", "a dog ran past the old houses"]
    rebuilt = Deduplicator.rebuilt(cfg, [(texts, np.array(["", "dedup", "perplexity"]))])
    uninterrupted = Deduplicator(cfg)
    uninterrupted.keep(texts)
    later = ["a dog ran past the old houses", "green fields near quiet houses", "the cat sat on the mat today"]
    assert rebuilt.keep(later).tolist() == uninterrupted.keep(later).tolist() == [False, True, False]


def test_oracle_detector_hits_its_rates_within_binomial_error():
    rng = np.random.default_rng(0)
    n = 20000
    source = np.array(["synthetic", "human"] * (n // 2))
    flags = oracle_flags(source, tpr=0.9, fpr=0.01, rng=rng)
    for src, rate in (("synthetic", 0.9), ("human", 0.01)):
        got = flags[source == src].mean()
        assert abs(got - rate) < 4 * math.sqrt(rate * (1 - rate) / (n // 2)), (src, got)


def test_grammar_verifier_accepts_sampled_sentences_and_rejects_corrupted_ones():
    lang = language.build(LanguageConfig())
    sents = language.sample_sentences(lang, 50, np.random.default_rng(0))
    texts = [" ".join(sents[i : i + 3]) for i in range(0, 48, 3)]
    assert grammatical(texts, lang, prompted=False).all()
    # An unknown word in the first sentence, or a sentence read backwards.
    corrupted = [f"zzz {t}" if i % 2 else " ".join(reversed(t.split()[:-1])) + " ." for i, t in enumerate(texts)]
    assert not grammatical(corrupted, lang, prompted=False).any()
    # A prompted continuation starts mid-sentence: its leading fragment is not judged.
    assert grammatical(["fragment words ." + " " + texts[0]], lang, prompted=True).all()


def test_perplexity_filter_hand_worked():
    ppl = np.array([5.0, 50.0, 20.0, np.nan, 10.0, 30.0])
    # 40.0 is the human 99th percentile: 50 is gibberish; 2 of 6 kept.
    assert perplexity_filter(ppl, 2 / 6, "highest", 40.0).tolist() == [False, False, True, False, False, True]
    assert perplexity_filter(ppl, 2 / 6, "lowest", 40.0).tolist() == [True, False, False, False, True, False]
    assert perplexity_filter(ppl, 1.0, "highest", 40.0).sum() == 4  # keep all but the gibberish and NaN


def test_the_perplexity_ceiling_is_the_human_99th_percentile():
    assert perplexity_ceiling({"ppl_gen0_per_sequence": list(range(1, 102))}) == pytest.approx(100.0)
    assert perplexity_ceiling({"ppl_gen0_per_sequence": [10.0, math.nan, 20.0]}) == pytest.approx(19.9)
    assert perplexity_ceiling({}) == math.inf


def test_importance_resampling_prefers_human_and_caps_repeats():
    rng = np.random.default_rng(0)
    confidence = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.0])
    picked = importance_resample(confidence, CurateConfig(resample_bias=10, resample_upsample=1.5,
                                                          resample_max_repeats=3), rng)
    assert len(picked) == 9
    counts = np.bincount(picked, minlength=6)
    assert counts.max() <= 3 and counts[2] == counts[3] == 0  # confidence 1: weight 0
    assert counts[[0, 1, 5]].sum() == 9  # 0.5^10 ~ 0.001: practically never drawn


@pytest.fixture(scope="module")
def tiny_lm():
    tok = train_bpe(["the cat sat on the mat while dogs ran past quiet old houses"] * 40, 300)
    model = build_model(ModelConfig(layers=1, width=32, heads=2, context=128), tok, seed=0).eval()
    return tok, model


def test_watermarked_samples_score_high_and_plain_ones_near_standard_normal(tiny_lm):
    tok, model = tiny_lm
    w = WatermarkConfig(enabled=True)
    prompts = torch.full((64, 1), tok.eos_token_id)
    torch.manual_seed(0)
    kwargs = dict(do_sample=True, max_new_tokens=64, min_new_tokens=64, pad_token_id=tok.eos_token_id, top_k=0)
    marked = model.generate(prompts, watermarking_config=watermarking_config(w), **kwargs)[:, 1:].numpy()
    plain = model.generate(prompts, **kwargs)[:, 1:].numpy()
    lengths = np.full(64, 64)
    z_marked = watermark_z(model.config, w, marked, lengths, torch.device("cpu"))
    z_plain = watermark_z(model.config, w, plain, lengths, torch.device("cpu"))
    assert np.median(z_marked) > 4 + 2 and (z_marked > 4).mean() > 0.9
    assert abs(z_plain.mean()) < 0.5 and 0.6 < z_plain.std() < 1.5 and (z_plain > 4).mean() == 0


# ---------------------------------------------------------------------------------------------
# Curation in the loop: every knob on a tiny run, counts that add up with provenance, and a resume.

CURATED = ["mixing.strategy=fixed_fraction", "mixing.human_fraction=0.5", "mixing.human_pool=fresh",
           "data.max_train_blocks=40", "generation.watermark.enabled=true", "curate.detector=watermark",
           "curate.z_threshold=1.5", "curate.dedup=minhash", "curate.verifier=grammar",
           "curate.perplexity_keep=0.9", "curate.perplexity_order=lowest", "run.log_with=tensorboard"]
# Accumulating with deduplication and a filter after it: the deduplication index reaches back over every
# earlier generation, including texts the perplexity filter then dropped (a resume must rebuild just that).
ORACLE = ["mixing.strategy=accumulate", "curate.detector=oracle", "curate.detector_tpr=0.9",
          "curate.detector_fpr=0.05", "curate.dedup=exact", "curate.perplexity_keep=0.5",
          "curate.resample=importance"]


@pytest.fixture(scope="module")
def curated_runs(tmp_path_factory):
    from testbed.cli import main

    from .helpers import TINY

    out = tmp_path_factory.mktemp("curated")
    for name, extra in (("watermark", CURATED), ("oracle", ORACLE)):
        assert main(["run", *TINY, *extra, f"run.out_dir={out}", f"run.name={name}"]) == 0
    return out


def _rows(run):

    return rundir.read_jsonl(run / "metrics.jsonl")


def test_curation_counts_add_up_with_provenance(curated_runs):
    import datasets

    for name in ("watermark", "oracle"):
        for row in _rows(curated_runs / name)[1:]:
            dropped = sum(row[f"synthetic_dropped_{k}"] for k in ("dedup", "verifier", "perplexity"))
            assert row["synthetic_in"] == row["synthetic_kept"] + dropped
            pool_kept = row["pool_human_kept"] + row["pool_synthetic_kept"]
            assert 0 <= row["detector_fpr"] <= 1 and (row["detector_tpr"] is None) == (row["pool_synthetic_in"] == 0)
            composition = row["train_composition"]
            if name == "watermark":  # no resampling: the training set is what screening kept
                assert composition.get("human", 0) == row["pool_human_kept"]
                assert sum(composition.values()) == pool_kept
            else:  # importance resampling: 1.5 x what screening kept
                assert sum(composition.values()) == round(1.5 * pool_kept)
            ds = datasets.load_from_disk(str(curated_runs / name / f"gen_{row['generation']:03d}" / "synthetic"))
            assert len(ds) == row["synthetic_in"] and ds["dropped_by"][:].count("") == row["synthetic_kept"]
    rows = _rows(curated_runs / "watermark")
    assert rows[1]["synthetic_dropped_verifier"] > 0 or rows[1]["synthetic_dropped_perplexity"] > 0
    assert rows[1]["z_synthetic_mean"] > rows[1]["z_human_mean"]  # the watermark shows, even in 8 tokens


def test_tensorboard_event_files_read_back(curated_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((curated_runs / "watermark").rglob("events.out.tfevents.*"))
    assert files
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "generation/ppl_human"} <= set(tags)
    ppl = [e.value for e in acc.Scalars("generation/ppl_human")]
    assert ppl == pytest.approx([r["ppl_human"] for r in _rows(curated_runs / "watermark")], rel=1e-6)


@pytest.mark.parametrize("name", ["watermark", "oracle"])
def test_a_curated_run_resumes_to_identical_metrics(curated_runs, tmp_path, name):
    """A copy of a finished run, stopped as if killed after generation 1 (generation 2's files gone), resumes:
    generation 2 is curated (the deduplication index rebuilt), trained and measured exactly as in the
    uninterrupted run, byte for byte."""
    import shutil

    from testbed.cli import main

    run = tmp_path / name
    shutil.copytree(curated_runs / name, run)
    shutil.rmtree(run / "gen_002")
    rows = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(b"".join(rows[:2]))
    assert main(["run", str(run), "--resume"]) == 0
    assert (run / "metrics.jsonl").read_bytes() == (curated_runs / name / "metrics.jsonl").read_bytes()


def test_env_json_says_what_ran(curated_runs):
    import hashlib
    import json

    import transformers

    env = json.loads((curated_runs / "oracle" / "env.json").read_text())["starts"]
    assert len(env) == 1 and env[0]["transformers"] == transformers.__version__
    assert env[0]["processes"] == 1 and env[0]["device"] == "cpu" and env[0]["python"]
    # What decides whether the numbers reproduce on another machine (tests/test_numerics.py: their values).
    assert env[0]["cpu_model"] == numerics.cpu()["cpu_model"] and env[0]["cpu_flags"] == numerics.cpu()["cpu_flags"]
    assert env[0]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env[0]["mkl_cbwr"] == ("AUTO" if torch.backends.mkl.is_available() else None)
    assert env[0]["portable_numerics"] is False
    assert env[0]["lock_sha256"] == hashlib.sha256(numerics.LOCK_FILE.read_bytes()).hexdigest()
    assert env[0]["lock_matches"] is (not env[0]["lock_differs"])


def test_evaluation_samples_are_never_watermarked(tmp_path, one_generation_run):
    """Two runs that differ only in generation.watermark.enabled evaluate the same generation 0 with the same
    samples: the watermark marks the data a model publishes, not the samples we measure it by."""
    from testbed.cli import main

    from .helpers import TINY

    assert main(["run", *TINY, "run.generations=1", "generation.watermark.enabled=true", f"run.out_dir={tmp_path}",
                 "run.name=wm-true"]) == 0
    runs = {"true": tmp_path / "wm-true", "false": one_generation_run}
    rows = {marked: _rows(run) for marked, run in runs.items()}
    assert {"distinct_2", "self_bleu", "tail_coverage", "grammatical_rate"} <= set(rows["true"][0])
    assert rows["true"][0] == rows["false"][0]  # the whole row: the sample metrics and all else
    assert (runs["true"] / "gen_000" / "samples.jsonl").read_bytes() == \
        (runs["false"] / "gen_000" / "samples.jsonl").read_bytes()
    # ... while the synthetic data of generation 1 does carry the watermark: the two runs' data differ.
    import datasets

    texts = {m: datasets.load_from_disk(str(run / "gen_001" / "synthetic"))["text"][:] for m, run in runs.items()}
    assert texts["true"] != texts["false"]
