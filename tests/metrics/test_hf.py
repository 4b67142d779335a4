import evaluate
import pytest

from testbed.metrics.hf import NAMES, module_path
from testbed.metrics.text import distinct_n, self_bleu

SAMPLES = ["the cat sat", "the cat ran", "a dog sat down"]


def test_modules_load_offline_from_the_package_and_agree():
    assert evaluate.load(module_path("self_bleu")).compute(predictions=SAMPLES)["self_bleu"] == \
        pytest.approx(self_bleu(SAMPLES))
    assert evaluate.load(module_path("distinct_n")).compute(predictions=SAMPLES, n=2)["distinct_n"] == \
        pytest.approx(distinct_n(SAMPLES, 2))
    out = evaluate.load(module_path("tail_coverage")).compute(predictions=["c"], reference=["a a b c"], tail_rank=1)
    assert out["tail_coverage"] == pytest.approx(0.5)


def test_every_name_has_a_module():
    for name in NAMES:
        assert evaluate.load(module_path(name)).name
    with pytest.raises(ValueError, match="unknown metric"):
        module_path("bleu")
