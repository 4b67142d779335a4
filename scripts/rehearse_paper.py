"""Rehearse the paper path offline on a CPU: both Shumailov et al. configs, scaled down, end to end.

    python scripts/rehearse_paper.py [--out runs/rehearsal] [--data ../shared/data/wikitext-2-raw]
                                     [--bpe ../shared/data/gpt2-tokenizer] [--precision fp32]

It makes what a user brings to the real run, shaped like the real thing:
- an OPT-shaped checkpoint saved with `save_pretrained` in fp16 (facebook/opt-125m is stored in fp16), with
  more embedding rows than tokens (50272 vs 50265 there) and a tokenizer that puts `</s>` before every
  text, as OPT's does (GPT-2's BPE from --bpe, or a small BPE trained on the corpus without it);
- raw WikiText-2 lines as `data.path` (train/valid/test.txt, empty lines kept): the raw train split is not
  available offline here, so the raw validation split is cut into train (first 80% of its lines) and
  valid; without --data a WikiText-like corpus is written instead;
then runs `testbed run` on both paper configs with only the model, the data path and sizes changed
(`SCALE_DOWN`), and `testbed paper-check` over both runs. The weights are random, so paper-check is
expected to say that the paper's numbers do not hold: the rehearsal shows that the path runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [REPO / "configs" / f"shumailov2024-opt125m-{name}.yaml" for name in ("replace", "keep10")]
OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids 0..3; `</s>` is its BOS and EOS

# Sizes only: blocks, generations, epochs, samples and batches. Every other value is the paper config's.
SCALE_DOWN = ["data.max_train_blocks=48", "data.max_eval_blocks=24", "run.generations=2", "train.epochs=1",
              "train.gen0_epochs=1", "train.batch_size=16", "generation.batch_size=16", "eval.num_samples=8",
              "eval.batch_size=16", "eval.tail_rank=50"]


def opt_like_tokenizer(bpe_dir: Path | None, lines: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE with OPT's special tokens that puts `</s>` before every text, like OPT's tokenizer:
    GPT-2's merges from `bpe_dir` (vocab.json + merges.txt), or a BPE of `vocab_size` trained on `lines`."""
    if bpe_dir is not None:
        tok = Tokenizer(models.BPE.from_file(str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt")))
        tok.add_special_tokens(OPT_SPECIALS)
    else:
        tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if bpe_dir is None:
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=OPT_SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(lines, trainer=trainer)
    bos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B",
                                                       special_tokens=[("</s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def save_opt_checkpoint(out: Path, tokenizer, layers: int = 2, width: int = 64, heads: int = 2,
                        context: int = 256, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """A randomly initialised OPT saved like the hub's facebook/opt-125m: weights in `dtype` (safetensors),
    the embedding padded to a multiple of 8 rows beyond the tokenizer, the tokenizer beside it."""
    config = AutoConfig.for_model(
        "opt", vocab_size=(len(tokenizer) + 7) // 8 * 8 + 8, num_hidden_layers=layers, hidden_size=width,
        word_embed_proj_dim=width, ffn_dim=4 * width, num_attention_heads=heads, max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def wikitext_like_lines(n_articles: int, seed: int = 0) -> list[str]:
    """Raw WikiText-shaped lines: ' = Title = ', blank lines around headings, paragraphs of words."""
    import random

    rng = random.Random(seed)
    words = ["the", "of", "and", "in", "was", "a", "to", "his", "river", "album", "season", "army", "city",
             "released", "game", "during", "first", "their", "which", "song", "war", "built", "church", "ship",
             "@-@", "@,@", "1998", "team", "records", "north", "film", "published", "critics", "island"]
    lines: list[str] = []
    for a in range(n_articles):
        lines += ["", f" = {rng.choice(words).title()} {a} = ", ""]
        for _ in range(rng.randint(2, 4)):
            sentences = [" ".join(rng.choices(words, k=rng.randint(6, 14))) + " ." for _ in range(rng.randint(2, 5))]
            lines.append(" " + " ".join(sentences) + " ")
            lines.append("")
    return lines


def write_corpus(out: Path, raw_dir: Path | None) -> Path:
    """train/valid/test.txt of raw lines: WikiText-2-raw's valid split cut 80/20 into train and valid plus
    its test split, or WikiText-like lines when `raw_dir` is None."""
    out.mkdir(parents=True, exist_ok=True)
    if raw_dir is not None:
        valid = (raw_dir / "valid.txt").read_text(encoding="utf-8").splitlines()
        cut = int(0.8 * len(valid))
        splits = {"train": valid[:cut], "valid": valid[cut:],
                  "test": (raw_dir / "test.txt").read_text(encoding="utf-8").splitlines()}
    else:
        lines = wikitext_like_lines(60)
        splits = {"train": lines[: len(lines) * 3 // 5], "valid": lines[len(lines) * 3 // 5 : len(lines) * 4 // 5],
                  "test": lines[len(lines) * 4 // 5 :]}
    for name, lines in splits.items():
        (out / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def commands(model: Path, data: Path, runs: Path, precision: str) -> list[list[str]]:
    """The `testbed run` argument lists of both paper configs, scaled down, then paper-check over both."""
    runs_of = [["run", str(c), f"model.name_or_path={model}", f"data.path={data}", *SCALE_DOWN,
                f"train.precision={precision}", f"run.out_dir={runs}", f"run.name={c.stem}"] for c in CONFIGS]
    return [*runs_of, ["paper-check", *(str(runs / c.stem) for c in CONFIGS)]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/rehearsal", help="where the checkpoint, corpus and runs go (new)")
    p.add_argument("--data", help="a folder with raw WikiText-2 valid.txt and test.txt (default: WikiText-like)")
    p.add_argument("--bpe", help="a folder with GPT-2's vocab.json and merges.txt (default: a BPE trained here)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    a = p.parse_args(argv)
    from testbed.cli import main as testbed

    out = Path(a.out)
    if out.exists():
        sys.exit(f"error: {out} exists: choose another --out")
    data = write_corpus(out / "data", Path(a.data) if a.data else None)
    lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = opt_like_tokenizer(Path(a.bpe) if a.bpe else None, lines)
    model = save_opt_checkpoint(out / "opt-fp16", tokenizer)
    for args in commands(model, data, out / "runs", a.precision):
        print("$ testbed " + shlex.join(args), flush=True)
        if testbed(args) != 0 and args[0] == "run":
            return 1
    return 0  # paper-check's verdict on random weights is not the rehearsal's


if __name__ == "__main__":
    sys.exit(main())
