"""Models several test files share: a hand-made one whose next-token distribution is known, one-layer
checkpoints saved like the hub's, and the rehearsal's sizes for the model-size and LoRA configs."""

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from testbed.config import ModelConfig
from testbed.model import build_model

from . import load_script

V = 16


class Counting(torch.nn.Module):
    """After an even token, certain (logit +50) that the next is token + 1; after an odd one, uniform over V.
    Its final hidden states are those logits, its LM head the identity."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(V, V, bias=False)
        torch.nn.init.eye_(self.head.weight)

    def base_model(self, input_ids, attention_mask=None):
        hidden = 50.0 * F.one_hot((input_ids + 1) % V, V) * (input_ids % 2 == 0).unsqueeze(-1)
        return SimpleNamespace(last_hidden_state=hidden.float())

    def get_output_embeddings(self):
        return self.head


def save_checkpoint(out: Path, tokenizer, arch: str, width: int, dtype: torch.dtype) -> Path:
    """A one-layer `arch` saved with save_pretrained in `dtype` (the hub's storage dtype), tokenizer beside."""
    model = build_model(ModelConfig(arch=arch, layers=1, width=width, heads=2, context=160), tokenizer, seed=0)
    model.to(dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


rehearse = load_script("rehearse_paper")
# Sizes only: the paper protocol's shape (prompt = block = new tokens, five beams) at 16 tokens, not 64.
SCALE_DOWN = [*rehearse.SCALE_DOWN, "run.generations=1", "eval.tail_rank=20", "data.max_train_blocks=16",
              "data.max_eval_blocks=8", "eval.num_samples=4", "data.block_size=16", "generation.prompt_tokens=16",
              "generation.max_new_tokens=16", "generation.min_new_tokens=16", "eval.prompt_tokens=16",
              "eval.max_new_tokens=16"]
