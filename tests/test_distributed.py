from testbed.config import ModelConfig
from testbed.distributed import differing, weight_digests
from testbed.model import build_model, train_bpe


def test_weight_digests_tell_processes_apart_by_one_element():
    tok = train_bpe(["a b c d e f g"] * 20, 300)
    models = [build_model(ModelConfig(layers=1, width=32, heads=2, context=64), tok, seed=0) for _ in range(3)]
    assert differing([weight_digests(m) for m in models]) == []
    weight = models[2].transformer.h[0].mlp.c_fc.weight
    weight.data[3, 5] = weight.data[3, 5].nextafter(weight.data[3, 5] + 1)  # one bit of one element
    assert differing([weight_digests(m) for m in models]) == ["transformer.h.0.mlp.c_fc.weight"]
