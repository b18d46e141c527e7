"""The embedded corpus: content, cleaning, split of whole works, and the char tokenizer."""

from __future__ import annotations

import hashlib
import json

import pytest

from oemdm_spec.data import corpus_info, get_tokenizer, load_embedded_corpus, load_embedded_works
from oemdm_spec.data.corpus import POEMS, WORK_SEPARATOR, clean_gutenberg_text, load_embedded_works_split
from oemdm_spec.data.tokenizer import read_data_file

EXPECTED_VALIDATION = ["as_you_like_it", "romeo_and_juliet"]
EXPECTED_TEST = ["coriolanus", "henry_iv_part_1"]


def test_shipped_files_match_manifest() -> None:
    manifest = json.loads(read_data_file("MANIFEST.json"))
    assert hashlib.sha256(read_data_file("shakespeare_gut.json.xz")).hexdigest() == manifest["shakespeare_gut.json"]
    assert hashlib.sha256(read_data_file("char_vocab.json")).hexdigest() == manifest["char_vocab.json"]


def test_42_works_no_boilerplate() -> None:
    works = load_embedded_works()
    assert len(works) == 42
    assert list(works) == sorted(works)
    assert set(POEMS) <= set(works)
    assert works["hamlet"].startswith("HAMLET, PRINCE OF DENMARK")
    assert "To be, or not to be" in works["hamlet"]
    for name, text in works.items():
        assert text.endswith("\n") and not text.endswith("\n\n"), name
        assert "Gutenberg" not in text and "GUTENBERG" not in text, name
        assert "ELECTRONIC VERSION" not in text and "SMALL PRINT" not in text, name
        assert "\r" not in text, name
        assert clean_gutenberg_text(text) == text, name  # cleaning is idempotent on shipped texts


def test_clean_gutenberg_text_removes_licence_blocks() -> None:
    raw = (
        "The Project Gutenberg EBook of X\r\nlicence stuff\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\nACT I.\r\n"
        "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS IS COPYRIGHT 1990-1993\nBY WORLD LIBRARY>>\n\n"
        "Enter Ghost.\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nmore licence\r\n"
    )
    assert clean_gutenberg_text(raw) == "ACT I.\nEnter Ghost.\n"
    old = "legal header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nplay\n"
    assert clean_gutenberg_text(old) == "play\n"


def test_split_holds_out_whole_works() -> None:
    split = load_embedded_works_split()
    assert list(split["validation"]) == EXPECTED_VALIDATION
    assert list(split["test"]) == EXPECTED_TEST
    names = [set(split[s]) for s in ("train", "validation", "test")]
    assert sum(len(n) for n in names) == 42 and set.union(*names) == set(load_embedded_works())
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    corpus = load_embedded_corpus()
    works = load_embedded_works()
    for s in ("train", "validation", "test"):
        assert corpus[s] == WORK_SEPARATOR.join(works[n] for n in split[s])
    # A distinctive line of a held-out play never leaks into train.
    assert "wherefore art thou Romeo" in corpus["validation"]
    assert "wherefore art thou Romeo" not in corpus["train"]


def test_corpus_info_sizes() -> None:
    info = corpus_info()
    corpus = load_embedded_corpus()
    assert info["validation"]["works"] == EXPECTED_VALIDATION
    assert info["test"]["works"] == EXPECTED_TEST
    assert info["train"]["n_works"] == 38
    for s in ("train", "validation", "test"):
        assert info[s]["n_chars"] == len(corpus[s])
    assert info["validation"]["work_chars"] == {"as_you_like_it": 125229, "romeo_and_juliet": 141754}
    assert info["test"]["work_chars"] == {"coriolanus": 164970, "henry_iv_part_1": 138392}
    assert sum(info[s]["n_chars"] for s in ("train", "validation", "test")) == 5_057_356


def test_char_tokenizer_round_trip_and_unk() -> None:
    tok = get_tokenizer("char")
    assert tok.name == "char" and tok.vocab_size == 85 and tok.unk_id == 84
    corpus = load_embedded_corpus()
    for s in ("validation", "test"):
        ids = tok.encode(corpus[s])
        assert len(ids) == len(corpus[s])
        assert 0 <= min(ids) and max(ids) < tok.unk_id  # the corpus has no unknown character
        assert tok.decode(ids) == corpus[s]
    # Stable ids: sorted code points, so ids are pinned.
    assert tok.encode("\n A") == [0, 1, tok.chars.index("A")]
    assert tok.encode("a~é") == [tok.chars.index("a"), tok.unk_id, tok.unk_id]
    assert tok.decode(tok.encode("a~")) == "a\ufffd"
    with pytest.raises(ValueError, match="id 85"):
        tok.decode([85])


def test_get_tokenizer_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown tokenizer name='gpt4'.*char, gpt2, bert-base-uncased"):
        get_tokenizer("gpt4")
    with pytest.raises(ValueError, match=r"unknown tokenizer name=\['char'\]"):
        get_tokenizer(["char"])  # type: ignore[arg-type]
    assert get_tokenizer("char") is get_tokenizer("char")  # shared instance
