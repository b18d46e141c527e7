"""The offline core of every data pipeline: documents -> token ids -> packed/padded arrays -> memmap cache.

Three protocols (``docs/data.md`` has the details and the sources):

``"stream"``  documents encoded one by one and concatenated, with ``separator_ids`` between consecutive
              documents; :class:`PackedDataset` cuts the stream into ``seq_len`` windows at load time (so the
              cache entry does not depend on ``seq_len``). Used for the embedded corpus.
``"wrap"``    MDLM / BD3LM "wrapped" packing: every document gets ``eos_id`` appended, the documents are
              concatenated, cut into chunks of ``seq_len - 2`` tokens, and each chunk becomes
              ``[bos_id] + chunk + [eos_id]``; the final partial chunk is dropped. OpenWebText (GPT-2,
              ``<|endoftext|>`` for both) and LM1B-packed (BERT, ``[CLS]``/``[SEP]``) use it.
``"padded"``  one sentence per row: ``[bos_id] + ids[: seq_len - 2] + [eos_id]``, then ``pad_id`` up to
              ``seq_len`` — what a Hugging Face BERT tokenizer gives with ``add_special_tokens=True,
              truncation=True, padding="max_length"``. LM1B in the MDLM protocol.

The cache key covers the tokenizer fingerprint, ``source`` (a caller-chosen string naming the text: a dataset
id and split, or a content hash), the protocol and its parameters, and the detokenizer — so a hit never needs
the documents, and ``documents`` may be a zero-argument callable that is only called on a miss.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from oemdm_spec.data.cache import ArrayWriter, cached_arrays, token_dtype
from oemdm_spec.data.sequences import PackedDataset, PaddedSentenceDataset
from oemdm_spec.data.tokenizer import Tokenizer

PROTOCOLS = ("stream", "wrap", "padded")
Documents = Iterable[str] | Callable[[], Iterable[str]]

# --------------------------------------------------------------------------------------------------------------
# LM1B detokenizer. LM1B sentences are stored pre-tokenised ("Hello , world ."); MDLM (Sahoo et al. 2024,
# kuleshov-group/mdlm, dataloader.py: lm1b_detokenizer) re-joins punctuation before tokenising. The rules below
# are that list, applied in order. For bert-base-uncased most of them change nothing (punctuation is split off
# again), but e.g. "£ 5" -> "£5" changes the WordPiece ids ("£" is a symbol, not punctuation, to BERT).
_LM1B_RULES: tuple[tuple[str, str, bool], ...] = (
    # (pattern, replacement, is_regex)
    ("http : / / ", "http://", False),
    ("https : / / ", "https://", False),
    (r" '(\w+)", r"'\1", True),
    (r" (\w+) \. ", r" \1. ", True),
    (r" (\w+) \.$", r" \1.", True),
    (" ? ", "? ", False),
    (r" \?$", "?", True),
    (" ! ", "! ", False),
    (r" \!$", "!", True),
    (" , ", ", ", False),
    (" : ", ": ", False),
    (" ; ", "; ", False),
    (" / ", "/", False),
    (r'" ([^"]+) "', r'"\1"', True),
    (r"' ([^']+) '", r"'\1'", True),
    (r"\( ([^\(\)]+) \)", r"(\1)", True),
    (r"\[ ([^\[\]]+) \]", r"[\1]", True),
    ("$ ", "$", False),
    ("£ ", "£", False),
)
_LM1B_COMPILED = tuple((re.compile(p) if rx else p, r, rx) for p, r, rx in _LM1B_RULES)


def lm1b_detokenize(text: str) -> str:
    """Undo LM1B's pre-tokenisation spacing with the MDLM rule list (see the comment above)."""
    for pat, rep, is_regex in _LM1B_COMPILED:
        text = pat.sub(rep, text) if is_regex else text.replace(pat, rep)  # type: ignore[union-attr]
    return text


DETOKENIZERS: dict[str, Callable[[str], str]] = {"lm1b": lm1b_detokenize}


# --------------------------------------------------------------------------------------------------------------
# Encoding (optionally in worker processes; order is preserved).
_WORKER: dict[str, Any] = {}


def _worker_init(tokenizer: Tokenizer, detok: str | None) -> None:
    _WORKER["tok"], _WORKER["detok"] = tokenizer, DETOKENIZERS[detok] if detok else None


def _encode_chunk(texts: list[str]) -> list[list[int]]:
    tok, detok = _WORKER["tok"], _WORKER["detok"]
    return [tok.encode(detok(t) if detok else t) for t in texts]


def encode_documents(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    detokenizer: str | None = None,
    num_proc: int = 1,
    chunk_size: int = 512,
) -> Iterator[list[int]]:
    """Yield the token ids of each document, in order; ``num_proc > 1`` encodes in worker processes."""
    if detokenizer is not None and detokenizer not in DETOKENIZERS:
        raise ValueError(f"unknown detokenizer={detokenizer!r}; valid: {', '.join(DETOKENIZERS)}")
    it = iter(documents)
    chunks = iter(lambda: list(itertools.islice(it, chunk_size)), [])
    if num_proc <= 1:
        _worker_init(tokenizer, detokenizer)
        for chunk in chunks:
            yield from _encode_chunk(chunk)
        return
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ctx.Pool(num_proc, initializer=_worker_init, initargs=(tokenizer, detokenizer)) as pool:
        for encoded in pool.imap(_encode_chunk, chunks):
            yield from encoded


def _check_doc(doc: object, index: int) -> str:
    if not isinstance(doc, str):
        raise ValueError(f"documents[{index}] must be a str, got {type(doc).__name__}")
    return doc


# --------------------------------------------------------------------------------------------------------------
# Protocol builders: write arrays through the cache writer, return the info dict.
def _build_stream(
    w: ArrayWriter, docs: Iterable[list[int]], vocab_size: int, separator_ids: Sequence[int]
) -> dict[str, Any]:
    dtype = token_dtype(vocab_size)
    w.open("ids", dtype)
    sep = np.asarray(separator_ids, dtype=np.int64)
    n_docs = n_tokens = 0
    buf: list[np.ndarray] = []
    for ids in docs:
        if n_docs and sep.size:
            buf.append(sep)
        buf.append(np.asarray(ids, dtype=np.int64))
        n_docs += 1
        if len(buf) >= 2048:
            block = np.concatenate(buf)
            w.append("ids", block)
            n_tokens += block.size
            buf = []
    if buf:
        block = np.concatenate(buf)
        w.append("ids", block)
        n_tokens += block.size
    return {"n_documents": n_docs, "n_tokens": n_tokens}


def _build_wrap(
    w: ArrayWriter, docs: Iterable[list[int]], vocab_size: int, seq_len: int, bos_id: int, eos_id: int
) -> dict[str, Any]:
    body = seq_len - 2
    w.open("ids", token_dtype(vocab_size))
    pending: list[int] = []
    n_docs = n_blocks = n_content = 0
    for ids in docs:
        pending.extend(ids)
        pending.append(eos_id)
        n_docs += 1
        n_content += len(ids) + 1
        full = len(pending) // body
        if full >= 64 or (full and len(pending) > 1 << 20):
            rows = np.asarray(pending[: full * body], dtype=np.int64).reshape(full, body)
            w.append("ids", _frame(rows, bos_id, eos_id).reshape(-1))
            n_blocks += full
            del pending[: full * body]
    full = len(pending) // body
    if full:
        rows = np.asarray(pending[: full * body], dtype=np.int64).reshape(full, body)
        w.append("ids", _frame(rows, bos_id, eos_id).reshape(-1))
        n_blocks += full
        del pending[: full * body]
    if n_blocks == 0:
        raise ValueError(
            f"documents give {n_content} tokens (with EOS), fewer than one block of seq_len - 2 = {body} "
            f"(seq_len={seq_len})"
        )
    return {"n_documents": n_docs, "n_blocks": n_blocks, "n_dropped_tokens": len(pending)}


def _frame(rows: np.ndarray, bos_id: int, eos_id: int) -> np.ndarray:
    n = rows.shape[0]
    return np.concatenate([np.full((n, 1), bos_id), rows, np.full((n, 1), eos_id)], axis=1)


def _build_padded(
    w: ArrayWriter,
    docs: Iterable[list[int]],
    vocab_size: int,
    seq_len: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> dict[str, Any]:
    w.open("x", token_dtype(vocab_size), (seq_len,))
    w.open("lengths", np.uint32)
    n_docs = n_truncated = 0
    rows: list[np.ndarray] = []
    lens: list[int] = []

    def flush() -> None:
        w.append("x", np.stack(rows))
        w.append("lengths", np.asarray(lens, dtype=np.int64))
        rows.clear()
        lens.clear()

    for ids in docs:
        body = ids[: seq_len - 2]
        n_truncated += len(ids) > seq_len - 2
        row = np.full(seq_len, pad_id, dtype=np.int64)
        seq = [bos_id, *body, eos_id]
        row[: len(seq)] = seq
        rows.append(row)
        lens.append(len(seq))
        n_docs += 1
        if len(rows) >= 4096:
            flush()
    if rows:
        flush()
    return {"n_documents": n_docs, "n_truncated": n_truncated}


def build_token_dataset(
    documents: Documents,
    tokenizer: Tokenizer,
    protocol: str,
    seq_len: int,
    source: str,
    cache_dir: str | os.PathLike[str] | None = None,
    detokenizer: str | None = None,
    separator_ids: Sequence[int] | None = None,
    num_proc: int = 1,
) -> PackedDataset | PaddedSentenceDataset:
    """Tokenise ``documents`` with ``protocol`` (cached on disk) and return the dataset over the memmap.

    ``source`` names the text (e.g. ``"hf:lm1b:train"`` or ``"sha256:…"``); it is part of the cache key, so two
    different texts must never share a ``source``. ``separator_ids`` (stream protocol only) defaults to
    ``[tokenizer.eos_id]`` if the tokenizer has one, else nothing. Returns a :class:`PackedDataset` for
    ``"stream"``/``"wrap"`` and a :class:`PaddedSentenceDataset` (``pad_mask`` True at padding) for
    ``"padded"``. The dataset's ``info`` attribute holds the build statistics and ``cache_path`` the entry.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol={protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < (1 if protocol == "stream" else 3):
        raise ValueError(f"seq_len must be an int >= {1 if protocol == 'stream' else 3}, got seq_len={seq_len!r}")
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string naming the text, got source={source!r}")
    desc: dict[str, Any] = {
        "tokenizer": tokenizer.name,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "source": source,
        "protocol": protocol,
        "detokenizer": detokenizer,
    }
    if protocol == "stream":
        if separator_ids is None:
            separator_ids = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
        desc["separator_ids"] = [int(i) for i in separator_ids]
    else:
        if tokenizer.bos_id is None or tokenizer.eos_id is None:
            raise ValueError(f"protocol={protocol!r} needs a tokenizer with bos_id and eos_id, got {tokenizer!r}")
        desc["seq_len"] = seq_len
        if protocol == "padded":
            if tokenizer.pad_id is None:
                raise ValueError(f"protocol='padded' needs a tokenizer with pad_id, got {tokenizer!r}")

    def build(w: ArrayWriter) -> dict[str, Any]:
        docs = documents() if callable(documents) else documents
        checked = (_check_doc(d, i) for i, d in enumerate(docs))
        encoded = encode_documents(checked, tokenizer, detokenizer, num_proc)
        if protocol == "stream":
            info = _build_stream(w, encoded, tokenizer.vocab_size, desc["separator_ids"])
        elif protocol == "wrap":
            info = _build_wrap(w, encoded, tokenizer.vocab_size, seq_len, tokenizer.bos_id, tokenizer.eos_id)
        else:
            info = _build_padded(
                w, encoded, tokenizer.vocab_size, seq_len, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
            )
        if info["n_documents"] == 0:
            raise ValueError("documents is empty (0 documents)")
        return info

    arrays, info, path = cached_arrays(desc, build, cache_dir)
    ds: PackedDataset | PaddedSentenceDataset
    if protocol == "padded":
        ds = PaddedSentenceDataset(arrays["x"], seq_len, tokenizer.pad_id, lengths=arrays["lengths"])
    else:
        ids = arrays["ids"]
        if ids.size == 0:
            raise ValueError(f"documents from source={source!r} encode to 0 tokens")
        ds = PackedDataset(ids, seq_len)
    ds.vocab_size = tokenizer.vocab_size
    ds.info = info  # type: ignore[attr-defined]
    ds.cache_path = path  # type: ignore[attr-defined]
    return ds
