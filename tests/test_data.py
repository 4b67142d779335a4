from pathlib import Path

import numpy as np
import pytest

from testbed.config import DataConfig
from testbed.data import DataError, load_corpus, read_text_file, to_blocks, tokenize_corpus, tokenize_stream
from testbed.model import train_bpe


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
    t = tokenize_corpus(corpus, tok, cfg, {"train": "a", "valid": "b", "test": "c"})
    assert t.train.shape == (5, 8) and t.valid.shape[1] == 8
