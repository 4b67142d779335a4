"""Human corpora (built-in language, local files, hub datasets) and packing token streams into blocks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed import language, rundir, seeding
from testbed.config import DataConfig
from testbed.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass
class HumanCorpus:
    """Raw text lines of each split, before tokenization."""

    train: list[str]
    valid: list[str]
    test: list[str]


def read_text_file(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, as they are; missing, blank or non-UTF-8 files are DataErrors."""
    if not path.is_file():
        raise DataError(f"corpus file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"corpus file {path} is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise DataError(f"corpus file {path} is empty")
    return text.splitlines()


def prepare_lines(lines: list[str], preprocessing: str) -> list[str]:
    """The text units tokenized one by one (see DataConfig.preprocessing): stripped non-empty lines
    (clean), or every line with its newline, blank lines as empty strings (shumailov2024, as the Hugging
    Face wikitext loader gives them)."""
    if preprocessing == "clean":
        return [line.strip() for line in lines if line.strip()]
    return [line + "\n" if line.strip() else "" for line in lines]


def file_lines(path: Path, preprocessing: str) -> list[str]:
    """The text units of a UTF-8 text file (read_text_file, then prepare_lines)."""
    return prepare_lines(read_text_file(path), preprocessing)


def _load_hub(name: str, config: str | None, splits: list[str], offline_hint: str) -> list:
    """The named splits of a hub dataset (only those are loaded); a failed load (a missing split among the
    causes) is a one-line DataError (`offline_hint`: what to do instead)."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=splits)
    except Exception as exc:  # offline, unknown name or split, ...: one line for the user
        raise DataError(
            f"could not load dataset '{name}' ({config}) from the hub: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. Offline? {offline_hint}"
        ) from None


def _hub_splits(name: str, config: str | None, splits: list[str], cfg: DataConfig,
                offline_hint: str) -> list[list[str]]:
    """The prepared lines of each named split of a hub dataset; a failed load or an empty split is a one-line
    DataError."""
    parts = _load_hub(name, config, splits, offline_hint)
    out = []
    for split, part in zip(splits, parts):
        lines = [t.rstrip("\n") for t in part[cfg.hf_text_column]]
        if not any(t.strip() for t in lines):
            raise DataError(f"dataset '{name}' split '{split}' is empty")
        out.append(prepare_lines(lines, cfg.preprocessing))
    return out


def _from_hub(cfg: DataConfig) -> HumanCorpus:
    lines = _hub_splits(cfg.hf_name, cfg.hf_config, ["train", "validation", "test"], cfg,  # type: ignore[arg-type]
                        "Use data.source=files with data.path=DIR holding train.txt, valid.txt, test.txt")
    return HumanCorpus(*lines)


def load_corpus(cfg: DataConfig, seed: int) -> HumanCorpus:
    """The human text of the configured source."""
    if cfg.source == "builtin":
        return HumanCorpus(**language.corpus(cfg.language, seed))
    if cfg.source == "files":
        root = Path(cfg.path)  # type: ignore[arg-type]
        if not root.is_dir():
            raise DataError(f"data.path {root} is not a directory (it must hold train.txt, valid.txt, test.txt)")
        return HumanCorpus(**{s: file_lines(root / f"{s}.txt", cfg.preprocessing) for s in SPLITS})
    return _from_hub(cfg)


# The corpora `testbed data NAME OUT_DIR` writes as files: NAME -> (hub dataset, its config); text in "text".
HUB_CORPORA = {"wikitext-2": ("wikitext", "wikitext-2-v1"), "wikitext-2-raw": ("wikitext", "wikitext-2-raw-v1")}


def write_hub_corpus(name: str, out_dir: Path) -> list[Path]:
    """Write a hub corpus of HUB_CORPORA as out_dir/train.txt, valid.txt and test.txt, the files data.source=files
    reads: one line per row of its text column, blank rows kept, so the files give the lines the hub source
    gives under either preprocessing. Existing files are never overwritten (checked before the download)."""
    hf_name, hf_config = HUB_CORPORA[name]
    paths = [out_dir / f"{s}.txt" for s in SPLITS]
    for path in paths:
        if path.exists():
            raise DataError(f"{path} already exists: remove it or choose another directory")
    parts = _load_hub(hf_name, hf_config, ["train", "validation", "test"],
                      f"`testbed data` needs the hub: run it on a machine with network access and "
                      f"copy {out_dir} from there")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, part in zip(paths, parts):
        rundir.write_text(path, "".join(t.rstrip("\n") + "\n" for t in part["text"]))
    return paths


def builtin_domain(source: str) -> language.Domain | None:
    """The domain an eval.corpora source names (builtin:D -> D, builtin:all -> "all"); None for other sources."""
    if not source.startswith("builtin:"):
        return None
    domain = source.removeprefix("builtin:")
    return "all" if domain == "all" else int(domain)


def eval_lines(source: str, cfg: DataConfig, seed: int) -> list[str]:
    """The test text of an eval.corpora source: builtin:D or builtin:all (language.test_lines), hf:NAME[/CONFIG]
    (the dataset's test split), or a directory's test.txt."""
    domain = builtin_domain(source)
    if domain is not None:
        return language.test_lines(cfg.language, domain, seed)
    if source.startswith("hf:"):
        name, _, hf_config = source.removeprefix("hf:").partition("/")
        return _hub_splits(name, hf_config or None, ["test"], cfg, "Name a directory holding test.txt instead")[0]
    return file_lines(Path(source) / "test.txt", cfg.preprocessing)


def tokenize_stream(tokenizer, lines: list[str], preprocessing: str = "clean") -> np.ndarray:
    """Token ids of all lines as one stream: clean puts the end-of-text token after each line and no
    other special token; shumailov2024 adds what the tokenizer itself adds (OPT: a BOS before each)."""
    if preprocessing == "clean":
        eos = [tokenizer.eos_token_id]
        encoded = tokenizer(lines, add_special_tokens=False)["input_ids"]
        return np.fromiter(itertools.chain.from_iterable(ids + eos for ids in encoded), dtype=np.int64)
    encoded = tokenizer(lines)["input_ids"]
    return np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64)


def to_blocks(stream: np.ndarray, block_size: int, name: str, keep_partial: bool = False) -> np.ndarray:
    """Cut a stream into non-overlapping (n, block_size) blocks; the remainder is dropped or padded with -1."""
    n = len(stream) // block_size
    if n == 0 and not (keep_partial and len(stream) > 1):
        raise DataError(
            f"{name} has {len(stream)} tokens, shorter than one block (data.block_size={block_size})"
        )
    blocks = stream[: n * block_size].reshape(n, block_size)
    rest = stream[n * block_size :]
    if keep_partial and len(rest) > 1:
        last = np.full((1, block_size), -1, dtype=stream.dtype)
        last[0, : len(rest)] = rest
        blocks = np.concatenate([blocks, last])
    return blocks


def tokenize_text(lines: list[str], tokenizer, cfg: DataConfig, name: str,
                  keep_partial: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A text's token stream (tokenize_stream) and its data.block_size blocks (to_blocks; `name` names the
    text in errors)."""
    stream = tokenize_stream(tokenizer, lines, cfg.preprocessing)
    return stream, to_blocks(stream, cfg.block_size, name, keep_partial)


def pad_rows(rows: list[list[int]], fill: int = -1, width: int | None = None, offset: int = 0) -> np.ndarray:
    """Token-id lists as one (n, width) matrix, each row starting at column `offset`, the rest `fill`."""
    width = width or offset + max(map(len, rows), default=0)
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, row in enumerate(rows):  # one copy per row, not per token
        out[i, offset : offset + len(row)] = row
    return out


@dataclass
class TokenizedCorpus:
    """Blocks of token ids per split; test keeps its final partial block (padded with -1), and its
    stream, from which the human text after each evaluation prompt is read."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    test_stream: np.ndarray
    train_pool: np.ndarray  # training blocks beyond data.max_train_blocks: unseen human text (fresh data)


def tokenize_corpus(corpus: HumanCorpus, tokenizer, cfg: DataConfig) -> TokenizedCorpus:
    """Tokenize and block every split (named in errors by split_names)."""
    out, names = {}, split_names(cfg)
    for split in SPLITS:
        stream, blocks = tokenize_text(getattr(corpus, split), tokenizer, cfg, names[split], split == "test")
        cap = cfg.max_train_blocks if split == "train" else cfg.max_eval_blocks
        out[split] = blocks[:cap] if cap else blocks
        if split == "train":
            out["train_pool"] = blocks[cap:] if cap else blocks[:0]
        if split == "test":
            out["test_stream"] = stream[: len(out[split]) * cfg.block_size]
    return TokenizedCorpus(**out)


def spread(available: int, n: int, seed: int) -> np.ndarray:
    """Indices of n items drawn evenly across `available` (one per stretch of available/n, at a seeded
    offset), so that samples represent the whole split rather than its first documents; with n >=
    available, every item in order, cycling."""
    if n >= available:
        return np.arange(n) % available
    offset = seeding.rng(seed, seeding.SPREAD).random()
    return np.floor((np.arange(n) + offset) * available / n).astype(np.int64)


def windows(stream: np.ndarray, block_size: int, prompt_tokens: int, new_tokens: int,
            name: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompts, continuations) at each block start of `stream`: the block's first `prompt_tokens`, and
    the `new_tokens` that follow them in the stream, which may run into the next block (as they must when
    prompt_tokens == block_size). Starts without a full continuation are left out."""
    starts = np.arange(0, len(stream), block_size)
    starts = starts[starts + prompt_tokens + new_tokens <= len(stream)]
    if not len(starts):
        raise DataError(f"{name} has {len(stream)} tokens: too short for one prompt of {prompt_tokens} tokens "
                        f"followed by {new_tokens} tokens of human text")
    window = stream[starts[:, None] + np.arange(prompt_tokens + new_tokens)]
    return window[:, :prompt_tokens], window[:, prompt_tokens:]


def split_names(cfg: DataConfig) -> dict[str, str]:
    """How each split is named in user-facing errors."""
    if cfg.source == "files":
        return {s: str(Path(cfg.path) / f"{s}.txt") for s in SPLITS}  # type: ignore[arg-type]
    if cfg.source == "hf":
        return {s: f"dataset {cfg.hf_name} split {s}" for s in SPLITS}
    return {s: f"built-in language split {s}" for s in SPLITS}
