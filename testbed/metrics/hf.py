"""The metrics as `evaluate` modules that load offline from a path inside the installed package.

    import evaluate
    from testbed.metrics.hf import module_path
    bleu = evaluate.load(module_path("self_bleu"))
    bleu.compute(predictions=["a b c", "a b d"], n=4)   # {'self_bleu': ...}

`evaluate.load("bleu")` needs the hub; these do not. Each module script is three lines that call
`make_metric`, so the definitions live in one place (testbed.metrics).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import evaluate
import numpy as np

from testbed.metrics import text

MODULES = Path(__file__).parent / "modules"
NAMES = tuple(sorted(p.name for p in MODULES.iterdir() if (p / f"{p.name}.py").is_file()))  # one folder a metric


def module_path(name: str) -> str:
    """The folder of a metric's evaluate module, for evaluate.load(...)."""
    if name not in NAMES:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(NAMES)}")
    return str(MODULES / name)


def _perplexity(predictions: list[str], model_path: str, batch_size: int = 32) -> dict:
    """Per-text perplexities and their token-weighted aggregate under a local model."""
    from transformers import AutoTokenizer

    from testbed.data import pad_rows
    from testbed.metrics.perplexity import per_sequence, sequence_nll
    from testbed.model import load_model

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_model(model_path, key="model_path")
    ids = pad_rows(tokenizer(predictions, add_special_tokens=False)["input_ids"])
    nll, count = sequence_nll(model, ids, batch_size=batch_size)
    return {"perplexities": per_sequence(nll, count).tolist(),
            "perplexity": float(np.exp(nll.sum() / max(count.sum(), 1)))}


def _compute(name: str, predictions: list[str], **kwargs) -> dict:
    if name == "self_bleu":
        return {"self_bleu": text.self_bleu(predictions, kwargs.get("n", 4))}
    if name == "distinct_n":
        return {"distinct_n": text.distinct_n(predictions, kwargs.get("n", 1), kwargs.get("per_sample", False))}
    if name == "rep_n":
        return {"rep_n": text.rep_n(predictions, kwargs.get("n", 4))}
    if name == "entropy":
        return {"entropy": text.entropy(predictions)}
    if name == "tail_coverage":
        tail = text.rare_ngrams(kwargs["reference"], kwargs.get("tail_rank", 1000), kwargs.get("n", 1))
        return {"tail_coverage": text.tail_coverage(predictions, tail)}
    return _perplexity(predictions, **kwargs)


def make_metric(name: str) -> type[evaluate.Metric]:
    """An evaluate.Metric class computing testbed.metrics' `name` over `predictions` (strings)."""

    class TestbedMetric(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=f"testbed {name}: see testbed.metrics",
                citation="",
                inputs_description="predictions: list of str (split on whitespace); metric options as kwargs",
                features=datasets.Features({"predictions": datasets.Value("string")}),
            )

        def _compute(self, predictions: list[str], **kwargs) -> dict:
            return _compute(name, list(predictions), **kwargs)

    TestbedMetric.__name__ = TestbedMetric.__qualname__ = "".join(p.title() for p in name.split("_"))
    return TestbedMetric
