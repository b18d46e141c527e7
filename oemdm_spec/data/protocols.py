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
import signal
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
# Encoding (optionally in worker processes; order is preserved). A chunk of documents comes back as one flat
# int64 array plus per-document lengths (cheap to pickle), and the characters / UTF-8 bytes of its text.
_WORKER: dict[str, Any] = {}


class EncodedChunk:
    """``ids`` (int64, the documents' ids concatenated), ``lengths`` (ids per document), ``n_chars``, ``n_bytes``."""

    __slots__ = ("ids", "lengths", "n_chars", "n_bytes")

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, n_chars: int, n_bytes: int) -> None:
        self.ids, self.lengths, self.n_chars, self.n_bytes = ids, lengths, n_chars, n_bytes

    def documents(self) -> list[np.ndarray]:
        return np.split(self.ids, np.cumsum(self.lengths)[:-1]) if self.lengths.size else []


def _worker_init(tokenizer: Tokenizer, detok: str | None, worker: bool = False) -> None:
    if worker:
        # A forked worker inherits the parent's Python signal handlers: the trainer's SIGTERM handler only sets
        # a flag, so Pool.terminate() (which sends SIGTERM) would wait forever for a worker that never exits.
        # Workers die on SIGTERM and leave Ctrl-C to the parent.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["tok"], _WORKER["detok"] = tokenizer, DETOKENIZERS[detok] if detok else None


def _encode_chunk(texts: list[str]) -> EncodedChunk:
    tok, detok = _WORKER["tok"], _WORKER["detok"]
    if detok is not None:
        texts = [detok(t) for t in texts]
    encoded = tok.encode_batch(texts)
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=total)
    n_chars = sum(len(t) for t in texts)
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    return EncodedChunk(ids, lengths, n_chars, n_bytes)


def encode_chunks(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    detokenizer: str | None = None,
    num_proc: int = 1,
    chunk_size: int = 256,
) -> Iterator[EncodedChunk]:
    """Encode ``documents`` in chunks of ``chunk_size`` with the tokenizer's batched call, in order.

    ``num_proc > 1`` encodes in worker processes (fork where available); the order of documents is preserved.
    """
    if detokenizer is not None and detokenizer not in DETOKENIZERS:
        raise ValueError(f"unknown detokenizer={detokenizer!r}; valid: {', '.join(DETOKENIZERS)}")
    if not isinstance(num_proc, int) or isinstance(num_proc, bool) or num_proc < 1:
        raise ValueError(f"num_proc must be a positive int, got num_proc={num_proc!r}")
    it = iter(documents)
    chunks = iter(lambda: list(itertools.islice(it, chunk_size)), [])
    if num_proc <= 1:
        _worker_init(tokenizer, detokenizer)
        yield from map(_encode_chunk, chunks)
        return
    # The HF tokenizers library warns (and disables its thread pool) when forked after use; workers use one
    # thread each anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ctx.Pool(num_proc, initializer=_worker_init, initargs=(tokenizer, detokenizer, True)) as pool:
        yield from pool.imap(_encode_chunk, chunks, chunksize=1)


def encode_documents(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    detokenizer: str | None = None,
    num_proc: int = 1,
    chunk_size: int = 256,
) -> Iterator[list[int]]:
    """Yield the token ids of each document, in order (a per-document view of :func:`encode_chunks`)."""
    for chunk in encode_chunks(documents, tokenizer, detokenizer, num_proc, chunk_size):
        for doc in chunk.documents():
            yield doc.tolist()


def _check_doc(doc: object, index: int) -> str:
    if not isinstance(doc, str):
        raise ValueError(f"documents[{index}] must be a str, got {type(doc).__name__}")
    return doc


def _interleave(chunk: EncodedChunk, sep: np.ndarray, lead: bool, trail: bool) -> np.ndarray:
    """The chunk's documents with ``sep`` between them (also before the first if ``lead``, after each if
    ``trail``)."""
    n = chunk.lengths.size
    if sep.size == 0 or n == 0:
        return chunk.ids
    n_sep = (n - 1) + int(lead) + (1 if trail else 0)
    out = np.empty(chunk.ids.size + n_sep * sep.size, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(chunk.lengths)[:-1]])
    # Offset of document i in the output: its start plus the separators before it.
    seps_before = np.arange(n) + (1 if lead else 0)
    dst = starts + seps_before * sep.size
    keep = np.ones(out.size, dtype=bool)
    for i in range(n):  # separator slots
        if i or lead:
            lo = dst[i] - sep.size
            out[lo : dst[i]] = sep
            keep[lo : dst[i]] = False
    if trail:
        out[out.size - sep.size :] = sep
        keep[out.size - sep.size :] = False
    out[keep] = chunk.ids
    return out


# --------------------------------------------------------------------------------------------------------------
# Protocol builders: write arrays through the cache writer, return the info dict.
def _counts(chunks: Iterable[EncodedChunk], totals: dict[str, int]) -> Iterator[EncodedChunk]:
    for c in chunks:
        totals["n_documents"] += int(c.lengths.size)
        totals["n_chars"] += c.n_chars
        totals["n_bytes"] += c.n_bytes
        totals["n_doc_tokens"] += int(c.ids.size)
        yield c


def _build_stream(
    w: ArrayWriter, chunks: Iterable[EncodedChunk], vocab_size: int, separator_ids: Sequence[int]
) -> dict[str, Any]:
    w.open("ids", token_dtype(vocab_size))
    sep = np.asarray(separator_ids, dtype=np.int64)
    n_tokens = 0
    first = True
    for c in chunks:
        if c.lengths.size == 0:
            continue
        block = _interleave(c, sep, lead=not first, trail=False)
        first = False
        w.append("ids", block)
        n_tokens += block.size
    return {"n_tokens": n_tokens}


def _build_wrap(
    w: ArrayWriter, chunks: Iterable[EncodedChunk], vocab_size: int, seq_len: int, bos_id: int, eos_id: int
) -> dict[str, Any]:
    body = seq_len - 2
    w.open("ids", token_dtype(vocab_size))
    eos = np.asarray([eos_id], dtype=np.int64)
    pending = np.zeros(0, dtype=np.int64)
    n_blocks = n_content = 0
    for c in chunks:
        stream = _interleave(c, eos, lead=False, trail=True)
        n_content += stream.size
        pending = np.concatenate([pending, stream]) if pending.size else stream
        full = pending.size // body
        if full:
            w.append("ids", _frame(pending[: full * body].reshape(full, body), bos_id, eos_id).reshape(-1))
            n_blocks += full
            pending = pending[full * body :].copy()
    if n_blocks == 0:
        raise ValueError(
            f"documents give {n_content} tokens (with EOS), fewer than one block of seq_len - 2 = {body} "
            f"(seq_len={seq_len})"
        )
    return {"n_blocks": n_blocks, "n_dropped_tokens": int(pending.size), "n_tokens": n_blocks * seq_len}


def _frame(rows: np.ndarray, bos_id: int, eos_id: int) -> np.ndarray:
    n = rows.shape[0]
    return np.concatenate([np.full((n, 1), bos_id), rows, np.full((n, 1), eos_id)], axis=1)


def _build_padded(
    w: ArrayWriter,
    chunks: Iterable[EncodedChunk],
    vocab_size: int,
    seq_len: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> dict[str, Any]:
    w.open("x", token_dtype(vocab_size), (seq_len,))
    w.open("lengths", np.uint32)
    n_truncated = n_tokens = 0
    for c in chunks:
        docs = c.documents()
        if not docs:
            continue
        rows = np.full((len(docs), seq_len), pad_id, dtype=np.int64)
        lens = np.empty(len(docs), dtype=np.int64)
        for i, ids in enumerate(docs):
            body = ids[: seq_len - 2]
            n_truncated += ids.size > seq_len - 2
            rows[i, 0] = bos_id
            rows[i, 1 : 1 + body.size] = body
            rows[i, 1 + body.size] = eos_id
            lens[i] = body.size + 2
        n_tokens += int(lens.sum())
        w.append("x", rows)
        w.append("lengths", lens)
    return {"n_truncated": int(n_truncated), "n_tokens": n_tokens}


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
        totals = {"n_documents": 0, "n_chars": 0, "n_bytes": 0, "n_doc_tokens": 0}
        encoded = _counts(encode_chunks(checked, tokenizer, detokenizer, num_proc), totals)
        if protocol == "stream":
            info = _build_stream(w, encoded, tokenizer.vocab_size, desc["separator_ids"])
        elif protocol == "wrap":
            info = _build_wrap(w, encoded, tokenizer.vocab_size, seq_len, tokenizer.bos_id, tokenizer.eos_id)
        else:
            info = _build_padded(
                w, encoded, tokenizer.vocab_size, seq_len, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
            )
        info.update(totals)
        if info["n_documents"] == 0:
            raise ValueError(f"documents is empty (0 documents) for source={source!r}")
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
