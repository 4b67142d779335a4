"""Checks of a merged config, a function per section: ranges and cross-field rules, each error naming its key
(types are checked while merging, layers.py); and which keys a run reads (unread_keys)."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from testbed.config.coerce import coerce, field_types
from testbed.config.schema import (
    Config,
    ConfigError,
    DataConfig,
    EvalDecodingConfig,
    GenerationConfig,
    LanguageConfig,
    LoraConfig,
    MixingConfig,
    PretrainConfig,
    SweepConfig,
    TrainConfig,
    WatermarkConfig,
    require,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,-]*$")


def is_plain_name(name: str) -> bool:
    """A name usable as a directory name: letters, digits, . _ = , - (not starting with a symbol, no '..')."""
    return bool(_NAME.match(name)) and ".." not in name


def check(cfg: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range or inconsistent, section by section."""
    _check_run(cfg)
    _check_data(cfg.data)
    _check_language(cfg.data.language)
    require(cfg.tokenizer.vocab_size >= 300, "tokenizer.vocab_size",
            f"must be at least 300 (256 bytes + specials), got {cfg.tokenizer.vocab_size}")
    _check_model(cfg)
    _check_generation(cfg)
    _check_mixing(cfg.mixing, "mixing.", "")
    check_schedule(cfg.mixing, cfg.run.generations)
    _check_mixing_needs(cfg)
    _check_curate(cfg)
    _check_train(cfg.train)
    _check_eval(cfg)
    _check_pretrain(cfg)
    _check_sweep(cfg.sweep)


def _check_run(cfg: Config) -> None:
    r = cfg.run
    require(0 <= r.seed < 2**32, "run.seed", f"must be in 0..2**32-1, got {r.seed}")  # numpy's seeds: >= 0
    require(r.generations >= 1, "run.generations", f"must be at least 1, got {r.generations}")
    lowest = -1 if cfg.pretrain.source != "none" else 0  # -1: the pretrained base
    require(lowest <= r.prefix_until <= r.generations, "run.prefix_until",
            f"must be in {lowest}..run.generations={r.generations}, got {r.prefix_until}")
    require(r.prefix_until == 0 or r.prefix_from is not None, "run.prefix_until",
            "needs run.prefix_from (the run whose generations this run takes)")
    require(r.threads is None or r.threads >= 1, "run.threads", f"must be at least 1 or null, got {r.threads}")
    require(r.name is None or is_plain_name(r.name), "run.name",
            f"{r.name!r} must be a plain directory name (letters, digits, . _ - = ,), not a path")


def _check_data(d: DataConfig) -> None:
    require(d.block_size >= 2, "data.block_size", f"must be at least 2, got {d.block_size}")
    for key in ("max_train_blocks", "max_eval_blocks"):
        value = getattr(d, key)
        require(value is None or value >= 1, f"data.{key}", f"must be at least 1 or null, got {value}")
    if d.source == "files":
        require(d.path is not None, "data.path", "is required when data.source is 'files'")
    if d.source == "hf":
        require(d.hf_name is not None, "data.hf_name", "is required when data.source is 'hf'")


def _check_language(lang: LanguageConfig) -> None:
    require(0 <= lang.seed < 2**32, "data.language.seed", f"must be in 0..2**32-1, got {lang.seed}")
    for key in ("nouns", "verbs", "adjectives", "adverbs", "train_sentences", "valid_sentences",
                "test_sentences", "sentences_per_line", "domains"):
        value = getattr(lang, key)
        require(value >= 1, f"data.language.{key}", f"must be at least 1, got {value}")
    require(0 <= lang.domain < lang.domains, "data.language.domain",
            f"must be in 0..{lang.domains - 1} (data.language.domains={lang.domains}), got {lang.domain}")
    require(lang.zipf_exponent > 0, "data.language.zipf_exponent", "must be positive")


def _check_model(cfg: Config) -> None:
    """A model built from scratch (model.name_or_path null); a pretrained one is checked once loaded."""
    m = cfg.model
    if m.name_or_path is not None:
        return
    for key in ("layers", "width", "heads", "context"):
        require(getattr(m, key) >= 1, f"model.{key}", "must be at least 1")
    require(m.width % m.heads == 0, "model.width", f"{m.width} is not divisible by model.heads={m.heads}")
    check_lengths(cfg, m.context, "model.context")


def _check_generation(cfg: Config) -> None:
    g, block = cfg.generation, cfg.data.block_size
    require(g.prompt_tokens >= 1, "generation.prompt_tokens", "must be at least 1")
    require(g.mode == "unconditional" or g.prompt_tokens <= block, "generation.prompt_tokens",
            f"{g.prompt_tokens} is longer than a block (data.block_size={block})")
    require(g.max_new_tokens >= 1, "generation.max_new_tokens", "must be at least 1")
    require(0 <= g.min_new_tokens <= g.max_new_tokens, "generation.min_new_tokens",
            f"must be in [0, generation.max_new_tokens={g.max_new_tokens}], got {g.min_new_tokens}")
    require(g.num_samples is None or g.num_samples >= 1, "generation.num_samples", "must be >= 1 or null")
    _check_decoding(g, "generation.")
    require(g.batch_size >= 1, "generation.batch_size", "must be at least 1")
    w = g.watermark
    require(0 < w.greenlist_ratio < 1, "generation.watermark.greenlist_ratio", "must be in (0, 1)")
    require(w.context_width >= 1, "generation.watermark.context_width", "must be at least 1")


def _check_mixing_needs(cfg: Config) -> None:
    """What the mixing settings need of the other sections: a pretraining corpus to draw from, and for
    complementary mixing one uncurated continuation per human block."""
    x = cfg.mixing
    if cfg.pretrain.source == "none":
        require(all(x.at(gen).human_pool != "pretrain" for gen in range(1, cfg.run.generations + 1)),
                "mixing.human_pool", "pretrain draws from the pretraining corpus: set pretrain.source")
    if x.complementary:
        g, c = cfg.generation, cfg.curate
        require(x.strategy == "fixed_fraction" and x.human_pool == "reuse", "mixing.complementary",
                "applies to mixing.strategy=fixed_fraction with mixing.human_pool=reuse")
        require(g.mode == "prompted" and g.num_samples is None, "mixing.complementary",
                "needs one continuation per human block: generation.mode=prompted, generation.num_samples=null")
        require(c.dedup == "none" and c.verifier == "none" and c.perplexity_keep == 1, "mixing.complementary",
                "needs every continuation: no curate.dedup, curate.verifier or curate.perplexity_keep filter")


def _check_curate(cfg: Config) -> None:
    c = cfg.curate
    require(c.detector != "watermark" or cfg.generation.watermark.enabled, "curate.detector",
            "watermark needs generation.watermark.enabled=true (nothing to detect otherwise)")
    for key in ("detector_tpr", "detector_fpr"):
        require(0 <= getattr(c, key) <= 1, f"curate.{key}", f"must be in [0, 1], got {getattr(c, key)}")
    require(0 < c.minhash_threshold <= 1, "curate.minhash_threshold", "must be in (0, 1]")
    require(c.minhash_shingle >= 1, "curate.minhash_shingle", "must be at least 1")
    require(c.minhash_perm >= 16, "curate.minhash_perm", "must be at least 16")
    require(0 < c.perplexity_keep <= 1, "curate.perplexity_keep", f"must be in (0, 1], got {c.perplexity_keep}")
    require(c.verifier == "none" or cfg.data.source == "builtin", "curate.verifier",
            "grammar needs the built-in language (data.source=builtin)")
    require(c.resample == "none" or c.detector != "none", "curate.resample",
            "importance resampling weighs by the detector's scores: set curate.detector")
    require(c.resample_upsample > 0, "curate.resample_upsample", "must be positive")
    require(c.resample_max_repeats >= 1, "curate.resample_max_repeats", "must be at least 1")


def _check_train(t: TrainConfig) -> None:
    require(t.epochs >= 1, "train.epochs", f"must be at least 1, got {t.epochs}")
    require(t.gen0_epochs is None or t.gen0_epochs >= 1, "train.gen0_epochs", "must be >= 1 or null")
    require(t.lr > 0, "train.lr", f"must be positive, got {t.lr}")
    require(0 <= t.min_lr <= t.lr, "train.min_lr", f"must be in [0, train.lr], got {t.min_lr}")
    require(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    require(t.batch_size >= 1, "train.batch_size", f"must be at least 1, got {t.batch_size}")
    require(t.grad_accum >= 1, "train.grad_accum", "must be at least 1")
    for key in ("weight_decay", "max_grad_norm", "eval_every"):
        require(getattr(t, key) >= 0, f"train.{key}", "must be >= 0")
    lora = t.lora
    require(lora.rank >= 1, "train.lora.rank", f"must be at least 1, got {lora.rank}")
    require(lora.alpha > 0, "train.lora.alpha", f"must be positive, got {lora.alpha}")
    require(0 <= lora.dropout < 1, "train.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
    require(lora.target_modules is None or (len(lora.target_modules) > 0 and all(
        isinstance(n, str) and n for n in lora.target_modules)), "train.lora.target_modules",
        "must be a non-empty list of module names, or null (peft's default for the architecture)")


def _check_eval(cfg: Config) -> None:
    e, block = cfg.eval, cfg.data.block_size
    require(e.num_samples >= 2, "eval.num_samples", "must be at least 2 (self-BLEU needs references)")
    require(e.prompt_tokens >= 1 and (cfg.generation.mode == "unconditional" or e.prompt_tokens <= block),
            "eval.prompt_tokens", f"must be in [1, data.block_size={block}]")
    for key in ("max_new_tokens", "batch_size", "tail_rank", "tail_tokens"):
        require(getattr(e, key) >= 1, f"eval.{key}", "must be at least 1")
    require(e.kl_alpha > 0, "eval.kl_alpha", f"must be positive, got {e.kl_alpha}")
    _check_decoding(e.decoding, "eval.decoding.")
    for name, source in e.corpora.items():
        _check_corpus(name, source, cfg.data)


def _check_sweep(s: SweepConfig) -> None:
    for key, values in s.grid.items():
        require(len(values) > 0, f"sweep.grid.{key}", "has no values")
    slurm = s.slurm
    for key in ("time_min", "cpus_per_run", "array_parallelism"):
        value = getattr(slurm, key)
        require(value >= 1, f"sweep.slurm.{key}", f"must be at least 1, got {value}")
    for key in ("gpus_per_run", "max_requeues"):
        value = getattr(slurm, key)
        require(value >= 0, f"sweep.slurm.{key}", f"must be >= 0, got {value}")
    require(slurm.mem_gb is None or slurm.mem_gb > 0, "sweep.slurm.mem_gb", "must be positive or null")


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
    """The pretraining of a base from scratch, when there is one."""
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


# What a run reads. Some keys matter only under a condition (mixing.human_fraction only where a generation
# mixes fixed_fraction); a run refuses a value it would ignore (layers.load_run), and a sweep leaves such a
# key out of the runs that ignore it (sweep/grid.py).


@dataclass(frozen=True)
class ReadIf:
    """Keys a run reads only under a condition: `when` says it in words, `deciders` are the keys that decide it."""

    keys: tuple[str, ...]
    deciders: tuple[str, ...]
    when: str
    reads: Callable[[Config], bool]

    def decided_by(self, keys: Iterable[str]) -> bool:
        """Whether any of the dotted `keys` (or an entry of one, eval.corpora.NAME) is one of the deciders."""
        return any(k == d or k.startswith(f"{d}.") for k in keys for d in self.deciders)


def _mixes_fixed_fraction(cfg: Config) -> bool:
    return any(cfg.mixing.at(g).strategy == "fixed_fraction" for g in range(1, cfg.run.generations + 1))


def _keys(section: str, cls: type, leave_out: str = "") -> tuple[str, ...]:
    return tuple(f"{section}.{f.name}" for f in dataclasses.fields(cls) if f.name != leave_out)


# The keys of mixing.strategy fixed_fraction: a run in which no generation mixes that way reads none of them.
FIXED_FRACTION_KEYS = ("mixing.human_fraction", "mixing.fixed_subset", "mixing.complementary", "mixing.human_pool")

READ_IF = (
    ReadIf(FIXED_FRACTION_KEYS, ("mixing.strategy", "mixing.schedule", "run.generations"),
           "mixing.strategy=fixed_fraction in some generation", _mixes_fixed_fraction),
    ReadIf(_keys("pretrain", PretrainConfig, "source"), ("pretrain.source",), "pretrain.source builtin or files",
           lambda c: c.pretrain.source != "none"),
    ReadIf(("data.path",), ("data.source",), "data.source=files", lambda c: c.data.source == "files"),
    ReadIf(("data.hf_name", "data.hf_config"), ("data.source", "data.path"), "data.source=hf",
           lambda c: c.data.source == "hf"),
    ReadIf(("data.hf_text_column",), ("data.source", "data.path", "eval.corpora"),
           "data.source=hf or an hf: corpus in eval.corpora",
           lambda c: c.data.source == "hf" or any(s.startswith("hf:") for s in c.eval.corpora.values())),
    ReadIf(("generation.prompt_tokens", "eval.prompt_tokens"), ("generation.mode",), "generation.mode=prompted",
           lambda c: c.generation.mode == "prompted"),
    ReadIf(_keys("generation.watermark", WatermarkConfig, "enabled"), ("generation.watermark.enabled",),
           "generation.watermark.enabled=true", lambda c: c.generation.watermark.enabled),
    ReadIf(("curate.z_threshold",), ("curate.detector",), "curate.detector=watermark",
           lambda c: c.curate.detector == "watermark"),
    ReadIf(("curate.detector_tpr", "curate.detector_fpr"), ("curate.detector",), "curate.detector=oracle",
           lambda c: c.curate.detector == "oracle"),
    ReadIf(("curate.minhash_threshold", "curate.minhash_shingle", "curate.minhash_perm"), ("curate.dedup",),
           "curate.dedup=minhash", lambda c: c.curate.dedup == "minhash"),
    ReadIf(("curate.perplexity_order",), ("curate.perplexity_keep",), "curate.perplexity_keep below 1",
           lambda c: c.curate.perplexity_keep < 1),
    ReadIf(("curate.resample_bias", "curate.resample_upsample", "curate.resample_max_repeats"), ("curate.resample",),
           "curate.resample=importance", lambda c: c.curate.resample == "importance"),
    ReadIf(_keys("train.lora", LoraConfig, "enabled"), ("train.lora.enabled",), "train.lora.enabled=true",
           lambda c: c.train.lora.enabled),
)


def unread_keys(cfg: Config) -> dict[str, ReadIf]:
    """The keys whose value does not change what this config's run computes (e.g. mixing.human_fraction when
    every generation replaces or accumulates, the pretrain keys without pretraining), each with its rule."""
    return {key: rule for rule in READ_IF if not rule.reads(cfg) for key in rule.keys}
