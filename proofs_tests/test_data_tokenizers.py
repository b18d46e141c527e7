"""GPT-2 BPE and bert-base-uncased WordPiece: round trips, pinned ids, and cross-checks against independent
implementations (Hugging Face ``tokenizers``, ``tiktoken``) loading the very files we ship."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from oemdm_spec.data import get_tokenizer, load_embedded_corpus
from oemdm_spec.data.tokenizer import byte_to_unicode_table, read_data_file

# Hand-picked edge cases: contractions, white-space runs, non-Latin scripts, emoji, combining marks, numbers of
# other scripts, the C0 separators (which Python's \s matches but Unicode White_Space does not), NEL, NBSP…
EDGE_CASES = [
    "Hello world",
    "  leading\t\ttabs\n\n\nand   spaces   ",
    "I'll don't we've they'RE '''s",
    "naïve café Ünïcödé ÅNGSTRÖM",
    "数学 日本語 한국어",
    "emoji 😀👍🏽 flags 🇫🇷",
    "\x1c\x1d\x1e\x1f sep",
    "line\u2028sep\u2029para\x85nel\x0bv\x0cf",
    "x² ½ ⅷ ١٢٣ 123456",
    "combining e\u0301 a\u0308 İstanbul ΣΟΦΟΣ",
    "<|endoftext|> special",
    "\u00a0nbsp\u3000ideo\u200bzw\ufeffbom\xadshy",
    "$5+3=<8>^`|~",
    "a" * 150,
    "",
    " ",
    "a\r\nb",
]
_ALPHABET = [chr(c) for c in [*range(32, 127)] * 3] + [
    chr(c)
    for c in (9, 10, 13, 0x1C, 0x85, 0xA0, 0x2028, 0x3000, 0xE9, 0x301, 0x4E00, 0x1F600, 0xB2, 0x661, 0x2167)
    + (0x200B, 0xFEFF, 0x130, 0x3A3, 0xDF, 0x1E9E, 0xFB01, 0x1C5, 0xAD, 0x2019, 0xD7FF, 0x0, 0xFFFD)
]


def _fuzz(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 60))) for _ in range(n)]


@pytest.fixture(scope="module")
def shipped_files(tmp_path_factory) -> dict[str, Path]:
    """Decompress the shipped vocab files so independent implementations can load exactly them."""
    d = tmp_path_factory.mktemp("vocab")
    out = {}
    for key, name in (
        ("encoder", "gpt2_encoder.json.xz"),
        ("merges", "gpt2_vocab.bpe.xz"),
        ("bert", "bert_base_uncased_vocab.txt.xz"),
    ):
        p = d / name[: -len(".xz")]
        p.write_bytes(read_data_file(name))
        out[key] = p
    return out


def test_shipped_vocab_hashes() -> None:
    manifest = json.loads(read_data_file("MANIFEST.json"))
    for key, name in (
        ("gpt2_encoder.json", "gpt2_encoder.json.xz"),
        ("gpt2_vocab.bpe", "gpt2_vocab.bpe.xz"),
        ("bert_base_uncased_vocab.txt", "bert_base_uncased_vocab.txt.xz"),
    ):
        assert hashlib.sha256(read_data_file(name)).hexdigest() == manifest[key]
    # Upstream digests (equal to tiktoken's gpt2 files and to bert-base-uncased's vocab.txt).
    assert manifest["gpt2_encoder.json"].startswith("196139668be63f3b")
    assert manifest["gpt2_vocab.bpe"].startswith("1ce1664773c50f3e")
    assert manifest["bert_base_uncased_vocab.txt"].startswith("07eced375cec144d")


def test_byte_table_is_a_bijection() -> None:
    t = byte_to_unicode_table()
    assert len(set(t)) == 256 and t[ord("A")] == "A" and t[ord(" ")] == "\u0120" and t[ord("\n")] == "\u010a"


def test_gpt2_known_ids_and_round_trip() -> None:
    tok = get_tokenizer("gpt2")
    assert tok.name == "gpt2" and tok.vocab_size == 50257 and tok.eos_id == 50256
    assert tok.encode("Hello world") == [15496, 995]  # the canonical GPT-2 example
    assert tok.encode("<|endoftext|>") != [50256]  # special tokens are never produced from text
    assert tok.decode([50256]) == "<|endoftext|>"
    for s in [*EDGE_CASES, *_fuzz(100, 1)]:
        ids = tok.encode(s)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == s
    text = load_embedded_corpus()["validation"]
    assert tok.decode(tok.encode(text)) == text
    with pytest.raises(ValueError, match="id 50257"):
        tok.decode([50257])


def test_gpt2_matches_hf_tokenizers(shipped_files) -> None:
    tokenizers = pytest.importorskip("tokenizers", reason="cross-check needs HF tokenizers")
    hf = tokenizers.Tokenizer(
        tokenizers.models.BPE.from_file(str(shipped_files["encoder"]), str(shipped_files["merges"]))
    )
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = get_tokenizer("gpt2")
    texts = [*EDGE_CASES, *_fuzz(300, 2), load_embedded_corpus()["test"][:60_000]]
    for s in texts:
        assert tok.encode(s) == hf.encode(s).ids, repr(s[:80])


def test_gpt2_matches_tiktoken(shipped_files) -> None:
    tiktoken = pytest.importorskip("tiktoken", reason="cross-check needs tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(str(shipped_files["merges"]), str(shipped_files["encoder"]))
    enc = tiktoken.Encoding(
        "gpt2-local",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )
    tok = get_tokenizer("gpt2")
    for s in [*EDGE_CASES, *_fuzz(300, 3), load_embedded_corpus()["validation"]]:
        assert tok.encode(s) == enc.encode_ordinary(s), repr(s[:80])


def test_bert_known_ids_and_round_trip() -> None:
    tok = get_tokenizer("bert-base-uncased")
    assert tok.name == "bert-base-uncased" and tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_token_id) == (0, 100, 101, 102, 103)
    assert tok.encode("Hello, World!") == [7592, 1010, 2088, 999]
    assert tok.decode(tok.encode("Café  NAÏVE,unaffable")) == "cafe naive , unaffable"
    assert [tok.itos[i] for i in tok.encode("unaffable")] == ["una", "##ffa", "##ble"]
    assert tok.encode("a" * 101) == [tok.unk_id] and tok.encode("😀") == [tok.unk_id]
    assert tok.decode([101, 7592, 102, 0], skip_special_tokens=True) == "hello"
    # decode∘encode is a fixed point after one normalisation (encode(decode(ids)) == ids).
    text = load_embedded_corpus()["validation"][:50_000]
    ids = tok.encode(text)
    assert tok.encode(tok.decode(ids)) == ids
    with pytest.raises(ValueError, match="id 30522"):
        tok.decode([30522])


def test_bert_matches_hf_tokenizers(shipped_files) -> None:
    tokenizers = pytest.importorskip("tokenizers", reason="cross-check needs HF tokenizers")
    hf = tokenizers.BertWordPieceTokenizer(str(shipped_files["bert"]), lowercase=True)
    hf.decoder = tokenizers.decoders.WordPiece(prefix="##", cleanup=False)
    tok = get_tokenizer("bert-base-uncased")
    texts = [*EDGE_CASES, *_fuzz(300, 4), load_embedded_corpus()["validation"]]
    for s in texts:
        ids = tok.encode(s)
        assert ids == hf.encode(s, add_special_tokens=False).ids, repr(s[:80])
    sample = texts[-1][:20_000]
    ids = tok.encode(sample)
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)
