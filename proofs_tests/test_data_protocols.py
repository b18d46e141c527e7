"""The wrap / padded / stream protocols on toy and real text, the LM1B detokeniser, and the LM1B / OpenWebText
loaders run offline on local text files (through Hugging Face ``datasets`` when it is installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oemdm_spec.data import (
    PackedDataset,
    PaddedSentenceDataset,
    build_token_dataset,
    get_tokenizer,
    lm1b_detokenize,
    load_embedded_dataset,
    load_lm1b,
    load_openwebtext,
    load_text_documents,
)
from oemdm_spec.data.cache import STATS
from oemdm_spec.data.tokenizer import Tokenizer


class WordTokenizer(Tokenizer):
    """Toy word-level tokenizer: ids 0..3 special ([PAD] [BOS] [EOS] [UNK]); word w<k> is id 4 + k."""

    def __init__(self, n_words: int = 50) -> None:
        self.name, self.vocab_size, self.fingerprint = "toy-words", 4 + n_words, f"toy{n_words}"
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    def encode(self, text: str) -> list[int]:
        return [4 + int(w[1:]) for w in text.split()]

    def decode(self, ids) -> str:
        return " ".join(f"w{i - 4}" if i >= 4 else ["[PAD]", "[BOS]", "[EOS]", "[UNK]"][i] for i in ids)


def _doc(*ks: int) -> str:
    return " ".join(f"w{k}" for k in ks)


def test_wrap_layout_exact(tmp_path) -> None:
    tok = WordTokenizer()
    docs = [_doc(10, 11, 12), _doc(20), _doc(30, 31, 32, 33, 34), _doc(40, 41)]
    ds = build_token_dataset(docs, tok, "wrap", 6, source="toy:wrap", cache_dir=tmp_path)
    assert isinstance(ds, PackedDataset)
    # Stream with EOS after each document: 14 15 16 E 24 E 34 35 36 37 38 E 44 45 E  (15 tokens)
    # cut into bodies of seq_len - 2 = 4 (3 full bodies, 3 tokens dropped), framed by BOS ... EOS.
    B, E = 1, 2
    rows = [[B, 14, 15, 16, E, E], [B, 24, E, 34, 35, E], [B, 36, 37, 38, E, E]]
    assert [r.tolist() for r in ds.iter_eval_batches(10)][0] == rows
    assert ds.info == {"n_documents": 4, "n_blocks": 3, "n_dropped_tokens": 3, "n_tokens": 18,
                       "n_doc_tokens": 11, "n_chars": 40, "n_bytes": 40}


def test_padded_layout_exact(tmp_path) -> None:
    tok = WordTokenizer()
    docs = [_doc(1, 2), _doc(*range(10)), ""]
    ds = build_token_dataset(docs, tok, "padded", 6, source="toy:pad", cache_dir=tmp_path)
    assert isinstance(ds, PaddedSentenceDataset)
    x, pad = next(ds.iter_eval_batches(3))
    assert x.tolist() == [[1, 5, 6, 2, 0, 0], [1, 4, 5, 6, 7, 2], [1, 2, 0, 0, 0, 0]]
    assert pad.tolist() == [[False] * 4 + [True] * 2, [False] * 6, [False] * 2 + [True] * 4]
    assert ds.info == {"n_documents": 3, "n_truncated": 1, "n_tokens": 12, "n_doc_tokens": 12, "n_chars": 34,
                       "n_bytes": 34}


def test_stream_separator_and_num_proc(tmp_path) -> None:
    tok = WordTokenizer()
    docs = [_doc(i, i + 1) for i in range(40)]
    one = build_token_dataset(docs, tok, "stream", 4, source="toy:s1", cache_dir=tmp_path)
    assert np.asarray(one.ids)[:7].tolist() == [4, 5, 2, 5, 6, 2, 6]  # EOS between documents only
    assert one.info == {"n_documents": 40, "n_tokens": 40 * 3 - 1, "n_doc_tokens": 80, "n_chars": 261,
                        "n_bytes": 261}
    two = build_token_dataset(docs, tok, "stream", 4, source="toy:s2", cache_dir=tmp_path, num_proc=2)
    assert np.array_equal(np.asarray(one.ids), np.asarray(two.ids))


def test_protocol_validation_errors(tmp_path) -> None:
    tok = WordTokenizer()
    with pytest.raises(ValueError, match=r"documents is empty \(0 documents\)"):
        build_token_dataset([], tok, "padded", 8, source="toy:e", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"documents give 3 tokens \(with EOS\), fewer than one block of "):
        build_token_dataset([_doc(1, 2)], tok, "wrap", 8, source="toy:short", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"ids has 3 tokens, fewer than one sequence of seq_len=8"):
        build_token_dataset([_doc(1, 2, 3)], tok, "stream", 8, source="toy:short2", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown protocol='packed'; valid: stream, wrap, padded"):
        build_token_dataset([_doc(1)], tok, "packed", 8, source="toy:p", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"documents\[1\] must be a str, got int"):
        build_token_dataset(["w1", 7], tok, "padded", 8, source="toy:t", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"seq_len must be an int >= 3, got seq_len=2"):
        build_token_dataset(["w1"], tok, "wrap", 2, source="toy:l", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"needs a tokenizer with bos_id and eos_id"):
        build_token_dataset(["ab"], get_tokenizer("char"), "wrap", 8, source="toy:c", cache_dir=tmp_path)
    # Failed builds cache nothing; only the (valid, seq_len-independent) stream of the too-short case is kept.
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_lm1b_detokenizer() -> None:
    assert lm1b_detokenize("Hello , world .") == "Hello, world."
    assert lm1b_detokenize("It 's 5 p.m. ; really ?") == "It's 5 p.m.; really?"
    # MDLM's rule only joins a final " ." to a word character, so ") ." stays.
    assert lm1b_detokenize('He said " hi there " ( twice ) .') == 'He said "hi there" (twice) .'
    assert lm1b_detokenize("Pay £ 5 or $ 6 at http : / / x.com") == "Pay £5 or $6 at http://x.com"
    bert = get_tokenizer("bert-base-uncased")
    # Where it matters for BERT ids: "£" is a symbol, not punctuation, so "£5" is one word.
    assert bert.encode(lm1b_detokenize("£ 5")) != bert.encode("£ 5")


def test_embedded_gpt2_stream_has_eos_between_works(tmp_path) -> None:
    ds = load_embedded_dataset("gpt2", "test", seq_len=1024, cache_dir=tmp_path)
    ids = np.asarray(ds.ids)
    assert ds.ids.dtype == np.uint16 and int((ids == 50256).sum()) == 1  # two works, one separator
    assert ds.info["n_documents"] == 2 and len(ds) == ids.size // 1024
    x = ds.get_batch(0, 4, seed=0)
    assert x.shape == (4, 1024) and x.dtype == torch.long and int(x.max()) < 50257


# ----------------------------------------------------------------------------------------------------------------
# The benchmark loaders, offline, on local files.
LM1B_TRAIN = [
    "The cat sat on the mat .",
    "Prices rose 5 % to £ 12 , analysts said .",
    '" It \'s over , " he said .',
    " ".join(["word"] * 200),  # longer than 128 tokens: truncated in the padded protocol
    "A short one .",
]
LM1B_TEST = ["Held-out sentence number one .", "And a second ( shorter ) one ."]
OWT_DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i} times." for i in range(12)]


@pytest.fixture()
def local_files(tmp_path, monkeypatch):
    pytest.importorskip("datasets", reason="the HF loaders need the 'datasets' package")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    d = tmp_path / "raw"
    d.mkdir()
    files = {}
    for name, lines in (("lm1b_train", LM1B_TRAIN), ("lm1b_test", LM1B_TEST), ("owt", OWT_DOCS)):
        p = d / f"{name}.txt"
        p.write_text("\n".join(lines) + "\n")
        files[name] = str(p)
    return files, tmp_path / "hf", tmp_path / "tokens"


def _lm1b_kwargs(files, hf_cache):
    return {
        "hf_path": "text",
        "data_files": {"train": files["lm1b_train"], "test": files["lm1b_test"]},
        "hf_cache_dir": str(hf_cache),
    }


def test_load_lm1b_padded_on_local_files(local_files) -> None:
    files, hf_cache, cache = local_files
    bert = get_tokenizer("bert-base-uncased")
    ds = load_lm1b("train", "padded", 128, cache_dir=cache, **_lm1b_kwargs(files, hf_cache))
    assert isinstance(ds, PaddedSentenceDataset) and len(ds) == len(LM1B_TRAIN)
    x, pad = next(ds.iter_eval_batches(len(LM1B_TRAIN)))
    for row, mask, sent in zip(x.tolist(), pad.tolist(), LM1B_TRAIN, strict=True):
        body = bert.encode(lm1b_detokenize(sent))[:126]
        expect = [bert.cls_id, *body, bert.sep_id]
        assert row == expect + [bert.pad_id] * (128 - len(expect))
        assert mask == [False] * len(expect) + [True] * (128 - len(expect))
    assert ds.info["n_truncated"] == 1
    val = load_lm1b("validation", "padded", 128, cache_dir=cache, **_lm1b_kwargs(files, hf_cache))
    assert len(val) == len(LM1B_TEST)
    assert bert.decode(next(val.iter_eval_batches(1))[0][0].tolist(), skip_special_tokens=True) == (
        "held - out sentence number one ."
    )


def test_load_lm1b_packed_on_local_files(local_files, monkeypatch) -> None:
    files, hf_cache, cache = local_files
    bert = get_tokenizer("bert-base-uncased")
    ds = load_lm1b("train", "packed", 32, cache_dir=cache, **_lm1b_kwargs(files, hf_cache))
    assert isinstance(ds, PackedDataset)
    stream = []
    for s in LM1B_TRAIN:
        stream += bert.encode(lm1b_detokenize(s)) + [bert.sep_id]
    n = len(stream) // 30
    expect = [[bert.cls_id, *stream[30 * i : 30 * i + 30], bert.sep_id] for i in range(n)]
    assert torch.cat(list(ds.iter_eval_batches(8))).tolist() == expect
    # Second load: served from the token cache without touching `datasets` at all.
    import oemdm_spec.data.benchmarks as bm

    monkeypatch.setattr(bm, "_require_datasets", lambda: pytest.fail("datasets used on a cache hit"))
    again = load_lm1b("train", "packed", 32, cache_dir=cache, **_lm1b_kwargs(files, hf_cache))
    assert np.array_equal(np.asarray(again.ids), np.asarray(ds.ids))


def test_load_openwebtext_split_on_local_files(local_files) -> None:
    files, hf_cache, cache = local_files
    gpt2 = get_tokenizer("gpt2")
    kw = {"hf_path": "text", "data_files": files["owt"], "hf_cache_dir": str(hf_cache), "n_validation_docs": 3}
    val = load_openwebtext("validation", seq_len=16, cache_dir=cache, **kw)
    train = load_openwebtext("train", seq_len=16, cache_dir=cache, **kw)
    assert val.info["n_documents"] == 3 and train.info["n_documents"] == 9

    def expected(docs):
        stream = [t for d in docs for t in [*gpt2.encode(d), gpt2.eos_id]]
        n = len(stream) // 14
        return [[gpt2.eos_id, *stream[14 * i : 14 * i + 14], gpt2.eos_id] for i in range(n)]

    assert torch.cat(list(val.iter_eval_batches(64))).tolist() == expected(OWT_DOCS[-3:])  # the last 3 docs
    assert torch.cat(list(train.iter_eval_batches(64))).tolist() == expected(OWT_DOCS[:-3])
    with pytest.raises(ValueError, match=r"unknown split='test'; valid: train, validation"):
        load_openwebtext("test", cache_dir=cache, **kw)


def test_local_file_edits_are_cache_misses(local_files) -> None:
    files, hf_cache, cache = local_files
    kw = _lm1b_kwargs(files, hf_cache)
    a = load_lm1b("validation", "padded", 16, cache_dir=cache, **kw)
    with open(files["lm1b_test"], "a") as f:
        f.write("A third sentence .\n")
    b = load_lm1b("validation", "padded", 16, cache_dir=cache, **kw)
    assert (len(a), len(b)) == (2, 3)


def test_load_text_documents_without_hf(tmp_path) -> None:
    docs = ["One sentence .", "Another one , longer than the first ."]
    ds = load_text_documents(docs, "bert-base-uncased", "padded", 12, cache_dir=tmp_path, detokenizer="lm1b")
    x, pad = next(ds.iter_eval_batches(2))
    bert = get_tokenizer("bert-base-uncased")
    assert x[0].tolist()[: 1 + len(bert.encode("One sentence."))] == [101, *bert.encode("One sentence.")]
    assert int((~pad).sum()) == sum(min(len(bert.encode(lm1b_detokenize(d))), 10) + 2 for d in docs)
    # Named by a content hash: the same documents hit, different ones miss.
    hits, built = STATS["hits"], STATS["built"]
    load_text_documents(list(docs), "bert-base-uncased", "padded", 12, cache_dir=tmp_path, detokenizer="lm1b")
    assert (STATS["hits"], STATS["built"]) == (hits + 1, built)
    load_text_documents(docs[:1], "bert-base-uncased", "padded", 12, cache_dir=tmp_path, detokenizer="lm1b")
    assert (STATS["hits"], STATS["built"]) == (hits + 1, built + 1)
    with pytest.raises(ValueError, match="unknown detokenizer='wt'"):
        load_text_documents(docs, "gpt2", "wrap", 8, cache_dir=tmp_path, detokenizer="wt")
