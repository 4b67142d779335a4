"""The memory table of docs/gpu-cluster.md ("Memory per model size"), computed by testbed.sweep.plan from each
model's config.

    PYTHONPATH=. python scripts/memory_table.py

Each model at the settings of configs/model-size-pythia-wikitext2.yaml (the paper's: blocks of 64 tokens,
batch 128, bf16 autocast, beam-5 generation of 64 tokens after 64 at batch 256), with full fine-tuning, and
with LoRA (rank 16, peft's default modules) and gradient checkpointing. Hub models' shapes come from the
local cache or testbed/model_shapes/. Prints a Markdown table.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from testbed import config
from testbed.sweep import plan

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "configs" / "model-size-pythia-wikitext2.yaml"
MODELS = ["facebook/opt-125m", "EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m",
          "HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M", "HuggingFaceTB/SmolLM2-1.7B",
          "Qwen/Qwen2.5-1.5B"]
LORA = ["train.lora.enabled=true", "train.gradient_checkpointing=true"]
HEADER = ["model", "parameters", "weights", "gen-0 copy", "grads + AdamW", "activations", "logits",
          "full fine-tuning peak", "LoRA + checkpointing peak", "beam-5 KV cache (kv heads)", "generation peak"]


def row(name: str) -> list[str]:
    full = plan.estimate(config.load(BASE, [f"model.name_or_path={name}"]))
    lora = plan.estimate(config.load(BASE, [f"model.name_or_path={name}", *LORA]))
    shape, _ = plan.model_shape(config.load(BASE, [f"model.name_or_path={name}"]))
    heads = shape.num_attention_heads
    kv = getattr(shape, "num_key_value_heads", None) or heads
    g = plan.gib
    return [name.split("/")[1], f"{full.parameters / 1e6:,.0f}M", g(full.weights), g(full.gen0_copy),
            g(full.grads_adamw), g(full.activations), g(full.logits), g(full.train_peak), g(lora.train_peak),
            f"{g(full.kv_cache)} ({kv} of {heads})", g(full.generate_peak)]


def main() -> None:
    warnings.simplefilter("ignore")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for name in MODELS:
        print("| " + " | ".join(row(name)) + " |")


if __name__ == "__main__":
    main()
