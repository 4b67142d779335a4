"""Loading or building tokenizers and causal LMs: hub names, local paths, or from a config offline."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from testbed import rundir
from testbed.config import Config, ModelConfig, check_lengths, is_local_path
from testbed.distributed import from_main
from testbed.errors import ModelError
from testbed.numerics import set_code_paths

EOS = "<|endoftext|>"


def offline() -> bool:
    """Whether the hub is switched off (HF_HUB_OFFLINE): hub names then resolve from the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _load_error(key: str, name: str, exc: Exception) -> ModelError:
    if is_local_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            return ModelError(f"{key}: {name} does not exist")
        return ModelError(f"{key}: {name} holds no loadable model or tokenizer ({type(exc).__name__})")
    if offline() or "connect" in str(exc).lower() or "offline" in str(exc).lower():
        return ModelError(
            f"{key}: '{name}' is a hub name, and the hub cannot be reached (offline). Download it once "
            "online, or set it to a local directory saved with save_pretrained"
        )
    return ModelError(f"{key}: could not load '{name}': {str(exc).splitlines()[0] if str(exc) else exc!r}")


def train_bpe(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `lines`, with <|endoftext|> as bos/eos/pad (like GPT-2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    return _wrap(tok)


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS)


def bpe_from_files(directory: Path) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE from a directory's vocab.json and merges.txt."""
    bpe = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if tok.token_to_id(EOS) is None:
        raise ModelError(f"tokenizer.name_or_path: {directory}/vocab.json has no {EOS} token")
    tok.add_special_tokens([EOS])
    return _wrap(tok)


def load_tokenizer(cfg: Config, train_lines: list[str]):
    """The configured tokenizer (see TokenizerConfig), with a pad token and left padding for generation."""
    name = cfg.tokenizer.name_or_path
    key = "tokenizer.name_or_path"
    if name is None and cfg.model.name_or_path is not None:
        name, key = cfg.model.name_or_path, "model.name_or_path"
    if name is None:
        tokenizer = train_bpe(train_lines, cfg.tokenizer.vocab_size)
    elif is_local_path(name) and (Path(name) / "vocab.json").is_file() and (Path(name) / "merges.txt").is_file() \
            and not (Path(name) / "tokenizer_config.json").is_file():
        tokenizer = bpe_from_files(Path(name))
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.model.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise _load_error(key, name, exc) from None
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{key}: tokenizer '{name}' has no end-of-text token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def run_tokenizer(cfg: Config, train_lines: list[str], accelerator, saved: Path | None = None):
    """A run's tokenizer: the one saved at `saved` (the run's own on a resume, or that of the run its first
    generations come from), else a new one (load_tokenizer), made once on the main process: BPE training
    need not give the same merges in two processes."""
    if saved is None:
        return from_main(accelerator, lambda: load_tokenizer(cfg, train_lines))
    tokenizer = AutoTokenizer.from_pretrained(saved)
    tokenizer.padding_side = "left"
    # Loading notes how it loaded (is_local, local_files_only) among the values every checkpoint's
    # tokenizer_config.json saves: dropped, so checkpoints equal those of a run that made the tokenizer.
    for key in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def start_token(tokenizer) -> int:
    """The token a sequence starts from (an unconditional sample's prompt): the tokenizer's BOS, or its
    end-of-text when it has none (GPT-2 style: <|endoftext|> separates and starts texts)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def arch_kwargs(m: ModelConfig) -> dict:
    if m.arch == "gpt2":
        return dict(n_layer=m.layers, n_embd=m.width, n_head=m.heads, n_positions=m.context)
    if m.arch == "opt":
        return dict(num_hidden_layers=m.layers, hidden_size=m.width, word_embed_proj_dim=m.width,
                    ffn_dim=4 * m.width, num_attention_heads=m.heads, max_position_embeddings=m.context)
    if m.arch == "gpt_neox":  # Pythia's: rotary on a quarter of each head, parallel attention and MLP
        return dict(num_hidden_layers=m.layers, hidden_size=m.width, intermediate_size=4 * m.width,
                    num_attention_heads=m.heads, max_position_embeddings=m.context, rotary_pct=0.25)
    return dict(num_hidden_layers=m.layers, hidden_size=m.width, intermediate_size=4 * m.width,
                num_attention_heads=m.heads, num_key_value_heads=m.heads, max_position_embeddings=m.context)


def build_model(m: ModelConfig, tokenizer, seed: int, vocab_size: int | None = None):
    """A randomly initialised `m.arch` model sized by the config; the init is seeded. `vocab_size`: embedding
    rows beyond the tokenizer's (hub checkpoints pad theirs; default: the tokenizer's length)."""
    ids = dict(bos_token_id=start_token(tokenizer), eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = AutoConfig.for_model(m.arch, vocab_size=vocab_size or len(tokenizer), **ids, **arch_kwargs(m))
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def load_model(name: str, trust_remote_code: bool = False, key: str = "model.name_or_path"):
    """A pretrained causal LM from a hub name or a local directory (safetensors preferred), in fp32.

    transformers 5 would keep the stored dtype (OPT-125m is stored in fp16): training those weights
    directly loses 2e-5 updates to rounding, and a CPU cannot run them at all. fp32 weights are the
    master copy; lower precision comes from `autocast`.
    """
    try:
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise _load_error(key, name, exc) from None
    return model.float()  # remote code may ignore `dtype`


@contextlib.contextmanager
def evaluating(model) -> Iterator[torch.device]:
    """The model in eval mode (dropout off) for the block, its mode restored after; yields its device."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The one mixed-precision context of a run (train.precision): training forwards, validation,
    evaluation, generation and scoring all run under it, so no number depends on which code path (or a
    resume) produced the model. fp32: no autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def reproducible_cpu(threads: int | None, portable: bool = False) -> int:
    """Make the same inputs give the same numbers on this CPU, run after run and across a resume; return
    the thread count used (`threads`, or torch's default).

    A fixed thread count: sums split over another count round differently, and torch's default leaves
    MKL free to use fewer threads on a busy machine. The code paths of torch and MKL (`numerics`; with
    `portable`, those of any x86 CPU with AVX2), set before anything computes. Deterministic algorithms
    wherever torch has a choice.
    """
    set_code_paths(portable)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return threads


def base_model(cfg: Config, tokenizer):
    """The model of a run without a pretrained base: model.name_or_path's checkpoint, or a seeded random init."""
    if cfg.model.name_or_path is None:
        return build_model(cfg.model, tokenizer, cfg.run.seed)
    model = load_model(cfg.model.name_or_path, cfg.model.trust_remote_code)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model


def saved_model(run_dir: Path, generation: int):
    """The model a run saved for `generation` (rundir.BASE: its pretrained base)."""
    return load_model(str(rundir.gen_dir(run_dir, generation) / "model"))


def start_model(cfg: Config, tokenizer, run_dir: Path, prefix: Path | None, start: int):
    """The model generation `start` begins from: model start-1 (this run's, or that of `prefix`, the run its
    first generations come from); for generation 0 the base: the pretrained base when it is complete (this
    run's, or the one it takes), a seeded init to pretrain (pretrain.seed), or base_model (a checkpoint, or a
    random init to train on the human text directly)."""
    if start > 0:
        return saved_model(prefix or run_dir, start - 1)
    if cfg.pretrain.source == "none":
        return base_model(cfg, tokenizer)
    for d in (run_dir, prefix):
        if d is not None and rundir.is_complete(d, rundir.BASE):
            return saved_model(d, rundir.BASE)
    return build_model(cfg.model, tokenizer, cfg.pretrain.seed)


def run_base(cfg: Config, tokenizer, run_dir: Path):
    """The run's base model, what train.init=base starts every generation g >= 1 from: its pretrained base, or
    base_model's."""
    if cfg.pretrain.source != "none":
        return saved_model(run_dir, rundir.BASE)
    return base_model(cfg, tokenizer)


def context_length(model) -> int | None:
    c = model.config
    for attr in ("n_positions", "max_position_embeddings"):
        if getattr(c, attr, None):
            return int(getattr(c, attr))
    return None


def check_context(cfg: Config, model) -> None:
    """Every sequence of the run must fit a pretrained model's context (see config.check_lengths)."""
    ctx = context_length(model)
    if ctx is not None:
        check_lengths(cfg, ctx, f"{cfg.model.name_or_path} max positions")
