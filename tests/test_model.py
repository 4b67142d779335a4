import torch

from testbed.model import autocast, load_model

from .helpers import load_script


def test_fp16_checkpoint_loads_as_fp32_master_weights(tmp_path):
    rehearse = load_script("rehearse_paper")
    tok = rehearse.opt_like_tokenizer(None, ["the cat sat on the mat"] * 20, vocab_size=300)
    path = rehearse.save_opt_checkpoint(tmp_path / "opt", tok, layers=1, width=16, heads=2, context=32)
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(path / "model.safetensors").values()} == {torch.float16}
    model = load_model(str(path))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.get_input_embeddings().num_embeddings > len(tok)  # padded like OPT-125m's 50272 > 50265


def test_autocast_is_off_for_fp32_and_on_otherwise():
    x = torch.randn(4, 4)
    with autocast("fp32", torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
