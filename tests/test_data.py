from pathlib import Path

import numpy as np
import pytest

from testbed.config import DataConfig
from testbed.data import (
    DataError,
    load_corpus,
    prepare_lines,
    read_text_file,
    to_blocks,
    tokenize_corpus,
    tokenize_stream,
    windows,
)
from testbed.model import train_bpe

from .helpers import load_script


def test_files_source(text_corpus: Path):
    corpus = load_corpus(DataConfig(source="files", path=str(text_corpus)), seed=0)
    assert len(corpus.train) == 120 and len(corpus.valid) == 20


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (b"caf\xe9 latin-1\n", "is not UTF-8 text"),
])
def test_bad_corpus_files_name_the_file(tmp_path: Path, content, message):
    f = tmp_path / "train.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(DataError, match=message) as exc:
        read_text_file(f)
    assert str(f) in str(exc.value)


def test_stream_puts_eos_after_each_line():
    tok = train_bpe(["a b c", "d e"] * 20, 300)
    stream = tokenize_stream(tok, ["a b", "c"])
    eos = tok.eos_token_id
    assert stream[-1] == eos and (stream == eos).sum() == 2
    assert tok.decode(stream[: list(stream).index(eos)]) == "a b"


def test_blocks_are_non_overlapping_and_short_corpus_is_named():
    s = np.arange(10)
    assert to_blocks(s, 4, "x").tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert to_blocks(s, 4, "x", keep_partial=True).tolist()[-1] == [8, 9, -1, -1]
    with pytest.raises(DataError, match="valid.txt has 3 tokens, shorter than one block"):
        to_blocks(np.arange(3), 4, "valid.txt")


def test_tokenize_corpus_caps_blocks(text_corpus: Path):
    cfg = DataConfig(source="files", path=str(text_corpus), block_size=8, max_train_blocks=5)
    corpus = load_corpus(cfg, 0)
    tok = train_bpe(corpus.train, 300)
    t = tokenize_corpus(corpus, tok, cfg)
    stream = tokenize_stream(tok, corpus.train)
    assert t.train.shape == (5, 8) and t.valid.shape[1] == 8
    assert len(t.train_pool) == len(stream) // 8 - 5 and t.train_pool[0].tolist() == stream[40:48].tolist()


def test_a_split_shorter_than_a_block_is_named_by_its_file(text_corpus: Path):
    (text_corpus / "valid.txt").write_text("the cat\n", encoding="utf-8")
    cfg = DataConfig(source="files", path=str(text_corpus), block_size=8)
    corpus = load_corpus(cfg, 0)
    with pytest.raises(DataError, match="shorter than one block") as exc:
        tokenize_corpus(corpus, train_bpe(corpus.train, 300), cfg)
    assert str(exc.value).startswith(f"{text_corpus / 'valid.txt'} has ")


def test_shumailov2024_preprocessing_keeps_lines_and_the_tokenizers_bos(tmp_path: Path):
    """Each raw line is tokenized alone with the tokenizer's own BOS (OPT-like), newline kept, blank lines
    kept as a lone BOS, no EOS added; clean strips, drops blank lines and appends EOS."""
    rehearse_paper = load_script("rehearse_paper")
    raw = [" = Title = ", "", " the cat sat . "]
    assert prepare_lines(raw, "shumailov2024") == [" = Title = \n", "", " the cat sat . \n"]
    assert prepare_lines(raw, "clean") == ["= Title =", "the cat sat ."]
    tok = rehearse_paper.opt_like_tokenizer(None, raw * 30, vocab_size=300)
    bos = tok.bos_token_id
    stream = tokenize_stream(tok, prepare_lines(raw, "shumailov2024"), "shumailov2024").tolist()
    starts = [i for i, t in enumerate(stream) if t == bos]
    assert len(starts) == 3 and starts[0] == 0 and starts[2] == starts[1] + 1  # the blank line: a lone BOS
    assert tok.decode(stream[1 : starts[1]]) == " = Title = \n"
    assert tok.decode(stream[starts[2] + 1 :]) == " the cat sat . \n"
    clean = tokenize_stream(tok, prepare_lines(raw, "clean"), "clean").tolist()
    assert clean.count(tok.eos_token_id) == 2 and clean[-1] == tok.eos_token_id  # OPT: eos == bos == </s>


def test_windows_read_the_continuation_from_the_stream():
    stream = np.arange(10)
    prompts, after = windows(stream, 4, 4, 3, "test")  # prompt == block: the continuation is the next block
    assert prompts.tolist() == [[0, 1, 2, 3]] and after.tolist() == [[4, 5, 6]]
    prompts, after = windows(stream, 4, 2, 2, "test")
    assert prompts.tolist() == [[0, 1], [4, 5]] and after.tolist() == [[2, 3], [6, 7]]  # 8 has no continuation
    with pytest.raises(DataError, match="test has 10 tokens: too short for one prompt of 8 tokens"):
        windows(stream, 4, 8, 4, "test")
