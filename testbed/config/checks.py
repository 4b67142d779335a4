"""Checks of a merged config: ranges and cross-field rules, each error naming its key. Types are checked
while merging (layers.py)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from testbed.config.coerce import coerce, field_types
from testbed.config.schema import (
    Config,
    ConfigError,
    DataConfig,
    EvalDecodingConfig,
    GenerationConfig,
    MixingConfig,
    require,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,-]*$")


def is_plain_name(name: str) -> bool:
    """A name usable as a directory name: letters, digits, . _ = , - (not starting with a symbol, no '..')."""
    return bool(_NAME.match(name)) and ".." not in name


def check(cfg: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range or inconsistent."""
    r, d, t, m, g, x, e = cfg.run, cfg.data, cfg.train, cfg.model, cfg.generation, cfg.mixing, cfg.eval
    for key, seed in (("run.seed", r.seed), ("data.language.seed", d.language.seed)):  # numpy's seeds: >= 0
        require(0 <= seed < 2**32, key, f"must be in 0..2**32-1, got {seed}")
    require(r.generations >= 1, "run.generations", f"must be at least 1, got {r.generations}")
    lowest = -1 if cfg.pretrain.source != "none" else 0  # -1: the pretrained base
    require(lowest <= r.prefix_until <= r.generations, "run.prefix_until",
             f"must be in {lowest}..run.generations={r.generations}, got {r.prefix_until}")
    require(r.prefix_until == 0 or r.prefix_from is not None, "run.prefix_until",
             "needs run.prefix_from (the run whose generations this run takes)")
    require(r.threads is None or r.threads >= 1, "run.threads", f"must be at least 1 or null, got {r.threads}")
    require(
        r.name is None or is_plain_name(r.name),
        "run.name",
        f"{r.name!r} must be a plain directory name (letters, digits, . _ - = ,), not a path",
    )
    require(d.block_size >= 2, "data.block_size", f"must be at least 2, got {d.block_size}")
    for key in ("max_train_blocks", "max_eval_blocks"):
        v = getattr(d, key)
        require(v is None or v >= 1, f"data.{key}", f"must be at least 1 or null, got {v}")
    if d.source == "files":
        require(d.path is not None, "data.path", "is required when data.source is 'files'")
    if d.source == "hf":
        require(d.hf_name is not None, "data.hf_name", "is required when data.source is 'hf'")
    lang = d.language
    for key in ("nouns", "verbs", "adjectives", "adverbs", "train_sentences", "valid_sentences",
                "test_sentences", "sentences_per_line", "domains"):
        require(getattr(lang, key) >= 1, f"data.language.{key}", f"must be at least 1, got {getattr(lang, key)}")
    require(0 <= lang.domain < lang.domains, "data.language.domain",
             f"must be in 0..{lang.domains - 1} (data.language.domains={lang.domains}), got {lang.domain}")
    require(lang.zipf_exponent > 0, "data.language.zipf_exponent", "must be positive")
    require(cfg.tokenizer.vocab_size >= 300, "tokenizer.vocab_size",
             f"must be at least 300 (256 bytes + specials), got {cfg.tokenizer.vocab_size}")

    if m.name_or_path is None:
        for key in ("layers", "width", "heads", "context"):
            require(getattr(m, key) >= 1, f"model.{key}", "must be at least 1")
        require(m.width % m.heads == 0, "model.width", f"{m.width} is not divisible by model.heads={m.heads}")
        check_lengths(cfg, m.context, "model.context")

    require(g.prompt_tokens >= 1, "generation.prompt_tokens", "must be at least 1")
    require(g.prompt_tokens <= d.block_size, "generation.prompt_tokens",
             f"{g.prompt_tokens} is longer than a block (data.block_size={d.block_size})")
    require(g.max_new_tokens >= 1, "generation.max_new_tokens", "must be at least 1")
    require(0 <= g.min_new_tokens <= g.max_new_tokens, "generation.min_new_tokens",
             f"must be in [0, generation.max_new_tokens={g.max_new_tokens}], got {g.min_new_tokens}")
    require(g.num_samples is None or g.num_samples >= 1, "generation.num_samples", "must be >= 1 or null")
    _check_decoding(g, "generation.")
    _check_decoding(e.decoding, "eval.decoding.")
    require(g.batch_size >= 1, "generation.batch_size", "must be at least 1")

    _check_mixing(x, "mixing.", "")
    check_schedule(x, r.generations)
    if cfg.pretrain.source == "none":
        require(all(x.at(gen).human_pool != "pretrain" for gen in range(1, r.generations + 1)), "mixing.human_pool",
                 "pretrain draws from the pretraining corpus: set pretrain.source")
    if x.complementary:
        require(x.strategy == "fixed_fraction" and x.human_pool == "reuse", "mixing.complementary",
                 "applies to mixing.strategy=fixed_fraction with mixing.human_pool=reuse")
        require(g.mode == "prompted" and g.num_samples is None, "mixing.complementary",
                 "needs one continuation per human block: generation.mode=prompted, generation.num_samples=null")
        c = cfg.curate
        require(c.dedup == "none" and c.verifier == "none" and c.perplexity_keep == 1, "mixing.complementary",
                 "needs every continuation: no curate.dedup, curate.verifier or curate.perplexity_keep filter")

    w, c = g.watermark, cfg.curate
    require(0 < w.greenlist_ratio < 1, "generation.watermark.greenlist_ratio", "must be in (0, 1)")
    require(w.context_width >= 1, "generation.watermark.context_width", "must be at least 1")
    require(c.detector != "watermark" or w.enabled, "curate.detector",
             "watermark needs generation.watermark.enabled=true (nothing to detect otherwise)")
    for key in ("detector_tpr", "detector_fpr"):
        require(0 <= getattr(c, key) <= 1, f"curate.{key}", f"must be in [0, 1], got {getattr(c, key)}")
    require(0 < c.minhash_threshold <= 1, "curate.minhash_threshold", "must be in (0, 1]")
    require(c.minhash_shingle >= 1, "curate.minhash_shingle", "must be at least 1")
    require(c.minhash_perm >= 16, "curate.minhash_perm", "must be at least 16")
    require(0 < c.perplexity_keep <= 1, "curate.perplexity_keep", f"must be in (0, 1], got {c.perplexity_keep}")
    require(c.verifier == "none" or d.source == "builtin", "curate.verifier",
             "grammar needs the built-in language (data.source=builtin)")
    require(c.resample == "none" or c.detector != "none", "curate.resample",
             "importance resampling weighs by the detector's scores: set curate.detector")
    require(c.resample_upsample > 0, "curate.resample_upsample", "must be positive")
    require(c.resample_max_repeats >= 1, "curate.resample_max_repeats", "must be at least 1")

    require(t.epochs >= 1, "train.epochs", f"must be at least 1, got {t.epochs}")
    require(t.gen0_epochs is None or t.gen0_epochs >= 1, "train.gen0_epochs", "must be >= 1 or null")
    require(t.lr > 0, "train.lr", f"must be positive, got {t.lr}")
    require(0 <= t.min_lr <= t.lr, "train.min_lr", f"must be in [0, train.lr], got {t.min_lr}")
    require(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    require(t.batch_size >= 1, "train.batch_size", f"must be at least 1, got {t.batch_size}")
    require(t.grad_accum >= 1, "train.grad_accum", "must be at least 1")
    require(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    require(t.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0")
    require(t.eval_every >= 0, "train.eval_every", "must be >= 0")
    lo = t.lora
    require(lo.rank >= 1, "train.lora.rank", f"must be at least 1, got {lo.rank}")
    require(lo.alpha > 0, "train.lora.alpha", f"must be positive, got {lo.alpha}")
    require(0 <= lo.dropout < 1, "train.lora.dropout", f"must be in [0, 1), got {lo.dropout}")
    require(lo.target_modules is None or (len(lo.target_modules) > 0 and all(
        isinstance(n, str) and n for n in lo.target_modules)), "train.lora.target_modules",
        "must be a non-empty list of module names, or null (peft's default for the architecture)")

    require(e.num_samples >= 2, "eval.num_samples", "must be at least 2 (self-BLEU needs references)")
    require(1 <= e.prompt_tokens <= d.block_size, "eval.prompt_tokens",
             f"must be in [1, data.block_size={d.block_size}]")
    require(e.max_new_tokens >= 1, "eval.max_new_tokens", "must be at least 1")
    require(e.batch_size >= 1, "eval.batch_size", "must be at least 1")
    require(e.tail_rank >= 1, "eval.tail_rank", "must be at least 1")
    require(e.tail_tokens >= 1, "eval.tail_tokens", "must be at least 1")
    require(e.kl_alpha > 0, "eval.kl_alpha", f"must be positive, got {e.kl_alpha}")
    for name, source in e.corpora.items():
        _check_corpus(name, source, d)
    _check_pretrain(cfg)

    for key, values in cfg.sweep.grid.items():
        require(len(values) > 0, f"sweep.grid.{key}", "has no values")
    sl = cfg.sweep.slurm
    for key in ("time_min", "cpus_per_run", "array_parallelism"):
        require(getattr(sl, key) >= 1, f"sweep.slurm.{key}", f"must be at least 1, got {getattr(sl, key)}")
    for key in ("gpus_per_run", "max_requeues"):
        require(getattr(sl, key) >= 0, f"sweep.slurm.{key}", f"must be >= 0, got {getattr(sl, key)}")
    require(sl.mem_gb is None or sl.mem_gb > 0, "sweep.slurm.mem_gb", "must be positive or null")


def _check_corpus(name: str, source: str, d: DataConfig) -> None:
    """One eval.corpora entry: a plain name (it names metrics keys) and a source that exists."""
    key = f"eval.corpora.{name}"
    require(re.fullmatch(r"[a-z][a-z0-9_]*", name) is not None, key,
             "the name must be lower-case letters, digits and _ (it names the keys ppl_NAME, ...)")
    require(name not in ("human", "gen0"), key, f"'{name}' names a built-in metric")
    if source.startswith("builtin:"):
        require(d.source == "builtin", key, "builtin: corpora need data.source=builtin (the language they share)")
        domain = source.removeprefix("builtin:")
        domains = d.language.domains
        require(domain == "all" or domain.isdigit() and int(domain) < domains, key,
                 f"expected builtin:all or builtin:D with D in 0..{domains - 1} (data.language.domains={domains}), "
                 f"got {source!r}")
    elif source.startswith("hf:"):
        require(len(source) > 3, key, "expected hf:NAME or hf:NAME/CONFIG")
    else:
        require(Path(source, "test.txt").is_file(), key, f"{source} holds no test.txt (expected builtin:D, "
                 "builtin:all, hf:NAME[/CONFIG] or a directory with test.txt)")


def _check_pretrain(cfg: Config) -> None:
    p = cfg.pretrain
    if p.source == "none":
        return
    require(cfg.model.name_or_path is None, "pretrain.source",
             f"{cfg.model.name_or_path} (model.name_or_path) is pretrained already: it is the base; set "
             "pretrain.source=none, or model.name_or_path=null to pretrain a model from scratch")
    if p.source == "files":
        require(p.path is not None, "pretrain.path", "is required when pretrain.source is 'files'")
        require(Path(p.path, "train.txt").is_file(), "pretrain.path",
                 f"{p.path} holds no train.txt (the pretraining text)")
    require(p.sentences >= 1, "pretrain.sentences", f"must be at least 1, got {p.sentences}")
    require(p.max_blocks is None or p.max_blocks >= 1, "pretrain.max_blocks", "must be at least 1 or null")
    require(p.epochs >= 1, "pretrain.epochs", f"must be at least 1, got {p.epochs}")
    require(p.lr > 0, "pretrain.lr", f"must be positive, got {p.lr}")
    require(0 <= p.seed < 2**32, "pretrain.seed", f"must be in 0..2**32-1, got {p.seed}")


def _check_decoding(d: GenerationConfig | EvalDecodingConfig, prefix: str) -> None:
    """The decoding knobs generation and evaluation share; a null eval.decoding value is generation's."""
    rules = {"num_beams": (lambda v: v >= 1, "must be at least 1"),
             "temperature": (lambda v: v > 0, "must be positive"),
             "top_k": (lambda v: v >= 0, "must be >= 0 (0 turns it off)"),
             "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
             "min_p": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
             "repetition_penalty": (lambda v: v > 0, "must be positive")}
    for key, (ok, problem) in rules.items():
        value = getattr(d, key)
        require(value is None or ok(value), prefix + key, f"{problem}, got {value}")


def _check_mixing(x: MixingConfig, prefix: str, inherited: str) -> None:
    """The mixing keys' ranges, for the top level or (prefix 'mixing.schedule[i].') one entry's settings."""
    require(0 <= x.human_fraction <= 1, f"{prefix}human_fraction",
             f"must be a fraction in [0, 1], got {x.human_fraction}")
    require(x.human_pool == "reuse" or x.strategy == "fixed_fraction", f"{prefix}human_pool",
             f"{x.human_pool}{inherited} applies to strategy fixed_fraction, not {x.strategy}")


def check_schedule(x: MixingConfig, generations: int) -> None:
    """mixing.schedule: mappings with from_generation increasing within 1..generations and known mixing
    keys of the right types (coerced in place, e.g. 1 -> 1.0); the settings each entry yields in range."""
    hints = {k: v for k, v in field_types(MixingConfig).items() if k != "schedule"}
    previous = 0
    for i, entry in enumerate(x.schedule):
        key = f"mixing.schedule[{i}]"
        require(isinstance(entry, dict), key, f"expected a mapping {{from_generation: k, <mixing keys>}}, "
                                               f"got {entry!r}")
        for name in entry:
            if name != "from_generation" and name not in hints:
                hint = difflib.get_close_matches(str(name), ["from_generation", *hints], n=1)
                extra = f" (did you mean '{key}.{hint[0]}'?)" if hint else ""
                raise ConfigError(f"unknown config key '{key}.{name}'{extra}")
        require("from_generation" in entry, f"{key}.from_generation", "is required (the first generation "
                                                                        "the entry applies to)")
        k = coerce(entry["from_generation"], int, f"{key}.from_generation", from_cli=False)
        require(previous < k <= generations, f"{key}.from_generation",
                 f"must be in {previous + 1}..run.generations={generations} (entries in increasing order), got {k}")
        previous = k
        for name, value in entry.items():
            if name != "from_generation":
                entry[name] = coerce(value, hints[name], f"{key}.{name}", from_cli=False)
        _check_mixing(x.at(k), f"{key}.", " (set here or before)")


def check_lengths(cfg: Config, context: int, source: str) -> None:
    """Every sequence the run feeds the model fits its `context` positions: training and evaluation
    blocks, prompt + continuation of generation and of evaluation samples (a start token + continuation
    when unconditional). `source` says where the context comes from, for the message."""
    d, g, e = cfg.data, cfg.generation, cfg.eval
    unconditional = g.mode == "unconditional"
    start = "a start token" if unconditional else "prompt_tokens"
    lengths = [
        ("data.block_size", d.block_size, ""),
        ("generation.max_new_tokens", (1 if unconditional else g.prompt_tokens) + g.max_new_tokens,
         f"{start} + max_new_tokens = "),
        ("eval.max_new_tokens", (1 if unconditional else e.prompt_tokens) + e.max_new_tokens,
         f"{start} + max_new_tokens = "),
    ]
    for key, length, what in lengths:
        require(length <= context, key, f"{what}{length} exceeds the model's context ({source}={context})")
