"""open_corpus: the embedded default equals today's trainer path; every path form; the benchmark protocols on local
files; padded valid masks; resume / rank slicing; clear errors; one build under concurrent openers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from oemdm_spec.data import PackedDataset, get_tokenizer, load_embedded_corpus, open_corpus, protocol_defaults
from oemdm_spec.data.cache import STATS
from oemdm_spec.data.protocols import lm1b_detokenize

DOCS = [f"document number {k} says {'hello ' * (k % 7 + 1)}and ends." for k in range(60)]


def test_embedded_default_equals_trainer_path(tmp_path) -> None:
    """Same ids, same get_batch and eval batches as fast/trainer.py's PackedDataset(tok.encode(text), seq_len)."""
    c = open_corpus("embedded", tokenizer="char", seq_len=64, cache_dir=tmp_path)
    tok, texts = get_tokenizer("char"), load_embedded_corpus()
    assert c.tokenizer is tok and c.protocol == "stream" and c.pad_id is None
    for split in ("train", "validation"):
        old = PackedDataset(tok.encode(texts[split]), 64)
        new = c[split]
        assert len(new) == len(old)
        assert np.array_equal(np.asarray(new._inner.ids, dtype=np.int64), np.asarray(old.ids))
        for step, b, seed, r, w in [(0, 8, 0, 0, 1), (7, 4, 3, 1, 2), (123, 16, 11, 0, 1)]:
            assert torch.equal(new.get_batch(step, b, seed, r, w), old.get_batch(step, b, seed, r, w))
        pairs = zip(new.iter_eval_batches(500), old.iter_eval_batches(500), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_protocol_defaults_and_overrides() -> None:
    assert protocol_defaults("owt") == {"tokenizer": "gpt2", "seq_len": 1024, "protocol": "wrap"}
    assert protocol_defaults("lm1b") == {"tokenizer": "bert-base-uncased", "seq_len": 128, "protocol": "padded"}
    assert protocol_defaults("lm1b-packed")["protocol"] == "wrap"
    assert protocol_defaults("embedded")["tokenizer"] == "char"
    assert protocol_defaults("/some/dir") == {"tokenizer": "char", "seq_len": 128, "protocol": "stream"}
    assert protocol_defaults("owt:/some/dir")["tokenizer"] == "gpt2"


def test_txt_file_keeps_the_90_5_5_character_split(tmp_path) -> None:
    text = "".join(DOCS) * 3
    f = tmp_path / "book.txt"
    f.write_text(text)
    c = open_corpus(str(f), seq_len=16, splits=("train", "validation", "test"), cache_dir=tmp_path / "c")
    tok, n = get_tokenizer("char"), len(text)
    for split, (a, b) in {"train": (0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1)}.items():
        ids = np.asarray(c[split]._inner.ids)
        assert ids.tolist() == tok.encode(text[int(a * n) : int(b * n)])
        assert c[split].text_stats()["n_chars"] == int(b * n) - int(a * n)


def _write(path: Path, kind: str, docs: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": docs}), path)


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_directory_with_named_splits(tmp_path, kind) -> None:
    root = tmp_path / "data"
    train, val = DOCS[:50], DOCS[50:]
    if kind == "txt":
        for i, d in enumerate(train):
            (root / "train").mkdir(parents=True, exist_ok=True)
            (root / "train" / f"{i:03d}.txt").write_text(d)
        for i, d in enumerate(val):
            (root / "validation").mkdir(parents=True, exist_ok=True)
            (root / "validation" / f"{i:03d}.txt").write_text(d)
    else:
        _write(root / f"train-0.{kind}", kind, train[:25])
        _write(root / f"train-1.{kind}", kind, train[25:])
        _write(root / f"validation.{kind}", kind, val)
    c = open_corpus(str(root), tokenizer="gpt2", protocol="wrap", seq_len=12, text_column="body",
                    cache_dir=tmp_path / "c", num_proc=1)
    tok = get_tokenizer("gpt2")
    for split, docs in (("train", train), ("validation", val)):
        stream = [i for d in docs for i in [*tok.encode(d), tok.eos_id]]
        n = len(stream) // 10
        rows = np.asarray(stream[: n * 10]).reshape(n, 10)
        expect = np.concatenate([np.full((n, 1), tok.bos_id), rows, np.full((n, 1), tok.eos_id)], axis=1)
        got = torch.cat(list(c[split].iter_eval_batches(1000))).numpy()
        assert np.array_equal(got, expect)
        assert c[split].info["n_documents"] == len(docs)
        assert c[split].info["n_bytes"] == sum(len(d.encode()) for d in docs)


def test_directory_without_split_names_uses_mod_20(tmp_path) -> None:
    root = tmp_path / "d"
    _write(root / "a.jsonl", "jsonl", DOCS[:30])
    _write(root / "b.jsonl", "jsonl", DOCS[30:])
    c = open_corpus(str(root), seq_len=8, text_column="body", splits=("train", "validation", "test"),
                    cache_dir=tmp_path / "c")
    sep = get_tokenizer("char").encode("\n\n\n")
    tok = get_tokenizer("char")
    for split, keep in (("train", lambda k: k % 20 < 18), ("validation", lambda k: k % 20 == 18),
                        ("test", lambda k: k % 20 == 19)):
        docs = [d for k, d in enumerate(DOCS) if keep(k)]
        expect = []
        for i, d in enumerate(docs):
            expect += (sep if i else []) + tok.encode(d)
        assert np.asarray(c[split]._inner.ids).tolist() == expect


@pytest.mark.parametrize("as_dict", [False, True])
def test_saved_hf_dataset(tmp_path, as_dict) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": DOCS[:40]})
    path = tmp_path / "saved"
    if as_dict:
        datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_dict({"text": DOCS[40:]})}).save_to_disk(
            str(path))
    else:
        ds.save_to_disk(str(path))
    c = open_corpus(str(path), tokenizer="bert-base-uncased", protocol="padded", seq_len=16,
                    splits=("train", "test"), cache_dir=tmp_path / "c", num_proc=1)
    n_test = len(DOCS) - 40 if as_dict else sum(1 for k in range(40) if k % 20 == 19)
    assert len(c["test"]) == n_test
    with pytest.raises(ValueError, match="text_column='body' not in the columns"):
        open_corpus(str(path), text_column="body", cache_dir=tmp_path / "c")


def test_lm1b_protocol_on_local_files_padded_valid(tmp_path) -> None:
    root = tmp_path / "lm1b"
    sents = ["Hello , world .", "It 's £ 5 .", "a " * 200, "Short ."]
    (root / "train").mkdir(parents=True)
    (root / "train" / "s.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sents))
    (root / "test").mkdir()
    (root / "test" / "s.jsonl").write_text(json.dumps({"text": "Held out ."}) + "\n")
    c = open_corpus(f"lm1b:{root}", splits=("train", "test"), cache_dir=tmp_path / "c", num_proc=1)
    bert = get_tokenizer("bert-base-uncased")
    assert c.protocol == "padded" and c.seq_len == 128 and c.pad_id == bert.pad_id == 0
    x, valid = next(c.train.iter_eval_batches(10, with_valid=True))
    for row, v, s in zip(x.tolist(), valid.tolist(), sents, strict=True):
        body = bert.encode(lm1b_detokenize(s))[:126]
        n = len(body) + 2
        assert row == [bert.cls_id, *body, bert.sep_id] + [0] * (128 - n)
        assert v == [True] * n + [False] * (128 - n)
    assert torch.equal(valid, c.train.valid_mask(x))
    assert c.train.n_real_tokens == int(valid.sum())
    xb, vb = c.train.get_batch(3, 2, seed=1, with_valid=True)
    assert torch.equal(vb, xb != 0) and xb.shape == (2, 128)
    assert c.train.text_stats()["n_tokens"] == int(valid.sum())


def test_owt_protocol_on_local_dir_last_docs_are_validation(tmp_path) -> None:
    root = tmp_path / "owt"
    _write(root / "part0.jsonl", "jsonl", DOCS)
    c = open_corpus(f"owt:{root}", seq_len=16, text_column="body", cache_dir=tmp_path / "c", num_proc=2,
                    hf_kwargs={"n_validation_docs": 10})
    assert c.train.info["n_documents"] == 50 and c.validation.info["n_documents"] == 10
    assert c.tokenizer.name == "gpt2" and c.protocol == "wrap"
    x = c.validation.get_batch(0, 2, 0)
    assert x[:, 0].eq(50256).all() and x[:, -1].eq(50256).all()
    with pytest.raises(ValueError, match="no test split"):
        open_corpus(f"owt:{root}", splits=("test",), text_column="body", cache_dir=tmp_path / "c")


def test_resume_and_rank_slicing(tmp_path) -> None:
    c = open_corpus("embedded", seq_len=32, splits=("validation",), cache_dir=tmp_path)
    v = c.validation
    run = [v.get_batch(s, 8, seed=5) for s in range(6)]
    again = open_corpus("embedded", seq_len=32, splits=("validation",), cache_dir=tmp_path).validation
    assert all(torch.equal(run[s], again.get_batch(s, 8, seed=5)) for s in range(3, 6))  # resume at step 3
    for w in (2, 4):
        g = v.get_batch(4, 8, seed=5)
        parts = [v.get_batch(4, 8 // w, seed=5, rank=r, world_size=w) for r in range(w)]
        for r in range(w):
            assert torch.equal(parts[r], g[r * 8 // w : (r + 1) * 8 // w])
    assert not torch.equal(v.get_batch(0, 8, seed=5), v.get_batch(0, 8, seed=6))


def test_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        open_corpus(str(tmp_path / "nope"), cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt, .jsonl or .parquet"):
        open_corpus(str(tmp_path / "empty"), cache_dir=tmp_path)
    _write(tmp_path / "e" / "train.jsonl", "jsonl", [])
    _write(tmp_path / "e" / "validation.jsonl", "jsonl", ["x"])
    with pytest.raises(ValueError, match=r"split='train'.*documents is empty"):
        open_corpus(str(tmp_path / "e"), cache_dir=tmp_path)
    _write(tmp_path / "m" / "train.jsonl", "jsonl", ["abc"])
    with pytest.raises(ValueError, match="text_column='text' not in the row"):
        open_corpus(str(tmp_path / "m"), splits=("train",), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="needs a tokenizer with bos_id"):
        open_corpus("embedded", protocol="wrap", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown protocol='packed'"):
        open_corpus("embedded", protocol="packed", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown split='dev'"):
        open_corpus("embedded", splits=("dev",), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown tokenizer name='gpt3'"):
        open_corpus("embedded", tokenizer="gpt3", cache_dir=tmp_path)
    v = open_corpus("embedded", seq_len=4096, splits=("validation",), cache_dir=tmp_path).validation
    with pytest.raises(ValueError, match=r"split 'validation' has 65 sequences.*batch_size=64 x world_size=2"):
        v.get_batch(0, 64, 0, 0, 2)


def test_cache_entry_of_another_tokenizer_is_refused(tmp_path) -> None:
    c = open_corpus("embedded", splits=("validation",), cache_dir=tmp_path)
    meta_path = c.validation.cache_path
    meta = json.loads(meta_path.read_text())
    meta["description"]["tokenizer_fingerprint"] = "tiktoken==0.0.1-built"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match the request.*tokenizer_fingerprint"):
        open_corpus("embedded", splits=("validation",), cache_dir=tmp_path)


def _open_in_child(args) -> tuple[int, str]:
    root, cache = args
    before = STATS["built"]
    c = open_corpus(root, tokenizer="gpt2", protocol="wrap", seq_len=32, splits=("train",), cache_dir=cache,
                    num_proc=1)
    ids = torch.cat(list(c.train.iter_eval_batches(10_000))).numpy()
    import hashlib

    return STATS["built"] - before, hashlib.sha256(ids.tobytes()).hexdigest()


def test_two_processes_build_one_cache_once(tmp_path) -> None:
    root = tmp_path / "d"
    _write(root / "train.jsonl", "jsonl", [d * 20 for d in DOCS] * 10)
    (root / "train.jsonl").write_text((root / "train.jsonl").read_text().replace('"body"', '"text"'))
    ctx = multiprocessing.get_context("spawn")  # two fresh interpreters racing for the same entry
    with ctx.Pool(2) as pool:
        results = pool.map(_open_in_child, [(str(root), str(tmp_path / "c"))] * 2)
    assert sorted(b for b, _ in results) == [0, 1]  # exactly one built it, the other read it
    assert results[0][1] == results[1][1]
    assert len(list((tmp_path / "c").glob("*.json"))) == 1
