"""The memmap disk cache: location, keys, hits without re-tokenising, atomicity, dtypes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from oemdm_spec.data import build_token_dataset, load_embedded_corpus, load_embedded_dataset
from oemdm_spec.data.cache import STATS, cache_key, resolve_cache_dir, token_dtype
from oemdm_spec.data.tokenizer import CharTokenizer, get_tokenizer


class CountingCharTokenizer(CharTokenizer):
    """The char tokenizer, counting encode calls (to prove a cache hit does not re-tokenise)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return super().encode(text)


DOCS = ["to be or not to be", "that is the question", "whether 'tis nobler in the mind"]


def test_resolve_cache_dir_precedence(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OEMDM_CACHE", raising=False)
    assert resolve_cache_dir() == Path.home() / ".cache" / "oemdm_spec"
    monkeypatch.setenv("OEMDM_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_env_var_is_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OEMDM_CACHE", str(tmp_path / "envcache"))
    tok = CountingCharTokenizer()
    ds = build_token_dataset(DOCS, tok, "stream", 4, source="test:env")
    assert Path(ds.cache_path).parent == tmp_path / "envcache"


def test_second_load_is_a_hit_without_tokenising(tmp_path) -> None:
    tok = CountingCharTokenizer()
    calls = {"n": 0}

    def docs():
        calls["n"] += 1
        return iter(DOCS)

    built, hits = STATS["built"], STATS["hits"]
    ds1 = build_token_dataset(docs, tok, "stream", 8, source="test:hit", cache_dir=tmp_path)
    assert tok.calls == 3 and calls["n"] == 1 and STATS["built"] == built + 1
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    ds2 = build_token_dataset(docs, tok, "stream", 8, source="test:hit", cache_dir=tmp_path)
    assert tok.calls == 3 and calls["n"] == 1, "a hit must not read or tokenise the documents again"
    assert STATS["hits"] == hits + 1 and STATS["built"] == built + 1
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes  # nothing rewritten
    assert isinstance(ds2.ids, np.memmap) and ds2.ids.dtype == np.uint16
    assert np.array_equal(np.asarray(ds1.ids), np.asarray(ds2.ids))
    # The char tokenizer has no EOS, so the stream is the plain concatenation.
    assert np.asarray(ds2.ids).tolist() == CharTokenizer().encode("".join(DOCS))
    # A different seq_len reuses the stream entry (stream entries do not depend on seq_len).
    build_token_dataset(docs, tok, "stream", 5, source="test:hit", cache_dir=tmp_path)
    assert tok.calls == 3 and calls["n"] == 1


def test_key_changes_with_every_ingredient(tmp_path) -> None:
    base = {"tokenizer": "char", "tokenizer_fingerprint": "a", "source": "s", "protocol": "wrap", "seq_len": 8}
    keys = {cache_key(base)}
    for k, v in (("tokenizer_fingerprint", "b"), ("source", "t"), ("protocol", "padded"), ("seq_len", 9)):
        keys.add(cache_key({**base, k: v}))
    assert len(keys) == 5
    assert cache_key(dict(reversed(base.items()))) == cache_key(base)  # order-independent
    tok = CountingCharTokenizer()
    build_token_dataset(DOCS, tok, "stream", 4, source="test:a", cache_dir=tmp_path)
    build_token_dataset(DOCS, tok, "stream", 4, source="test:b", cache_dir=tmp_path)
    assert tok.calls == 6 and len(list(tmp_path.glob("*.json"))) == 2


def test_failed_build_leaves_nothing(tmp_path) -> None:
    tok = CountingCharTokenizer()

    def bad_docs():
        yield "fine"
        raise RuntimeError("network died")

    with pytest.raises(RuntimeError, match="network died"):
        build_token_dataset(bad_docs, tok, "stream", 2, source="test:bad", cache_dir=tmp_path)
    # No entry, no stray temporary files; only the (empty) lock file of the entry's key.
    left = list(tmp_path.iterdir())
    assert [p.suffix for p in left] == [".lock"] and left[0].stat().st_size == 0
    ds = build_token_dataset(DOCS, tok, "stream", 2, source="test:bad", cache_dir=tmp_path)
    assert len(ds) == sum(map(len, DOCS)) // 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_entry_is_rebuilt(tmp_path) -> None:
    tok = CountingCharTokenizer()
    ds = build_token_dataset(DOCS, tok, "stream", 4, source="test:corrupt", cache_dir=tmp_path)
    (binfile,) = tmp_path.glob("*.bin")
    expected = np.asarray(ds.ids).copy()
    del ds
    with open(binfile, "r+b") as f:
        f.truncate(10)  # a torn file: its size no longer matches the metadata
    ds = build_token_dataset(DOCS, tok, "stream", 4, source="test:corrupt", cache_dir=tmp_path)
    assert tok.calls == 6 and np.array_equal(np.asarray(ds.ids), expected)


def test_token_dtype() -> None:
    assert token_dtype(85) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(50257) == np.uint16
    with pytest.raises(ValueError, match="vocab_size=4294967297"):
        token_dtype(2**32 + 1)


def test_embedded_dataset_cached_and_exact(tmp_path) -> None:
    corpus = load_embedded_corpus()
    ds = load_embedded_dataset("char", "validation", seq_len=128, cache_dir=tmp_path)
    tok = get_tokenizer("char")
    assert np.asarray(ds.ids).tolist() == tok.encode(corpus["validation"])
    assert len(ds) == len(corpus["validation"]) // 128
    assert ds.vocab_size == tok.vocab_size
    hits = STATS["hits"]
    ds2 = load_embedded_dataset("char", "validation", seq_len=64, cache_dir=tmp_path)
    assert STATS["hits"] == hits + 1 and len(ds2) == len(corpus["validation"]) // 64
    with pytest.raises(ValueError, match=r"unknown split='dev'"):
        load_embedded_dataset("char", "dev", cache_dir=tmp_path)
    assert os.listdir(tmp_path)
