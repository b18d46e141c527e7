"""Ready-made datasets: the embedded corpus (offline), local text files, LM1B and OpenWebText (Hugging Face).

All of them go through :func:`oemdm_spec.data.protocols.build_token_dataset`, so they share one disk cache and
one set of protocols. The benchmark loaders import Hugging Face ``datasets`` only when called; the hub is needed
the first time only (after that, the tokenised memmap is served from the cache without touching ``datasets``).

Published numbers and their protocols (``docs/data.md``):

* LM1B, MDLM protocol: bert-base-uncased, each sentence ``[CLS] … [SEP]`` padded/truncated to 128
  (``load_lm1b(protocol="padded")``); validation is LM1B's ``test`` split (LM1B has no other held-out split).
* LM1B, BD3LM protocol: the same sentences packed/wrapped into 128-token blocks (``protocol="packed"``).
* OpenWebText, MDLM protocol: GPT-2 BPE, the last 100,000 documents of ``train`` are validation, wrapped into
  1024-token blocks with ``<|endoftext|>`` after every document and at both ends of every block.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from oemdm_spec.data.corpus import WORK_SEPARATOR, load_embedded_works_split
from oemdm_spec.data.protocols import build_token_dataset
from oemdm_spec.data.sequences import PackedDataset, PaddedSentenceDataset
from oemdm_spec.data.tokenizer import get_tokenizer

PathLike = str | os.PathLike[str]
EMBEDDED_SPLITS = ("train", "validation", "test")


def _require_datasets() -> Any:
    try:
        import datasets  # noqa: PLC0415 - optional dependency, imported on use
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this loader needs the Hugging Face 'datasets' package (pip install datasets); "
            "the embedded corpus (load_embedded_dataset) works without it"
        ) from exc
    return datasets


def hf_documents(
    path: str, split: str, text_column: str = "text", batch_size: int = 1000, **load_kwargs: Any
) -> Callable[[], Iterator[str]]:
    """A zero-argument callable that loads ``datasets.load_dataset(path, split=split, **load_kwargs)`` and yields
    its ``text_column`` — lazily, so a cache hit never loads (or downloads) the dataset."""

    def gen() -> Iterator[str]:
        ds = _require_datasets().load_dataset(path, split=split, **load_kwargs)
        columns = getattr(ds, "column_names", None)  # None for some streaming datasets
        if columns is not None and text_column not in columns:
            raise ValueError(f"text_column={text_column!r} not in dataset columns {columns}")
        for batch in ds.iter(batch_size=batch_size):
            yield from batch[text_column]

    return gen


def _hf_source(path: str, split: str, load_kwargs: dict[str, Any]) -> str:
    extra = ""
    data_files = load_kwargs.get("data_files")
    if data_files is not None:
        # Local files: key on their contents, so editing a file is a cache miss.
        extra = ":files=" + _files_digest(data_files)
    name = load_kwargs.get("name")
    return f"hf:{path}{':' + name if name else ''}:{split}{extra}"


def _files_digest(data_files: Any) -> str:
    if isinstance(data_files, dict):
        items = sorted((k, _files_digest(v)) for k, v in data_files.items())
        return hashlib.sha256(repr(items).encode()).hexdigest()[:16]
    paths = [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def load_embedded_dataset(
    tokenizer: str = "char", split: str = "train", seq_len: int = 256, cache_dir: PathLike | None = None
) -> PackedDataset:
    """The embedded Shakespeare split, tokenised (cached) and cut into ``seq_len`` windows.

    Works are encoded one by one; between consecutive works goes the tokenizer's ``eos_id`` (GPT-2
    ``<|endoftext|>``, BERT ``[SEP]``), or for the char tokenizer the encoding of the corpus separator
    ``"\\n\\n\\n"`` — so for ``"char"`` the stream is exactly ``encode(load_embedded_corpus()[split])``.
    """
    if split not in EMBEDDED_SPLITS:
        raise ValueError(f"unknown split={split!r}; valid: {', '.join(EMBEDDED_SPLITS)}")
    tok = get_tokenizer(tokenizer)
    works = load_embedded_works_split()[split]
    digest = hashlib.sha256("\0".join(f"{n}\0{t}" for n, t in works.items()).encode("utf-8")).hexdigest()
    sep = tok.encode(WORK_SEPARATOR) if tok.eos_id is None else [tok.eos_id]
    ds = build_token_dataset(
        lambda: works.values(),
        tok,
        "stream",
        seq_len,
        source=f"embedded-shakespeare:{split}:sha256={digest}",
        cache_dir=cache_dir,
        separator_ids=sep,
    )
    assert isinstance(ds, PackedDataset)
    return ds


def load_text_documents(
    documents: Iterable[str] | Sequence[str],
    tokenizer: str,
    protocol: str,
    seq_len: int,
    source: str | None = None,
    cache_dir: PathLike | None = None,
    detokenizer: str | None = None,
    num_proc: int = 1,
) -> PackedDataset | PaddedSentenceDataset:
    """Any in-memory documents through a protocol. Without ``source`` the documents are hashed to name them."""
    docs = list(documents)
    if source is None:
        h = hashlib.sha256()
        for d in docs:
            h.update(str(d).encode("utf-8", "surrogatepass"))
            h.update(b"\0\1")
        source = f"documents:sha256={h.hexdigest()}"
    return build_token_dataset(
        docs, get_tokenizer(tokenizer), protocol, seq_len, source, cache_dir, detokenizer, num_proc=num_proc
    )


def load_lm1b(
    split: str = "train",
    protocol: str = "padded",
    seq_len: int = 128,
    cache_dir: PathLike | None = None,
    hf_path: str = "lm1b",
    num_proc: int = 1,
    hf_cache_dir: PathLike | None = None,
    **load_kwargs: Any,
) -> PackedDataset | PaddedSentenceDataset:
    """LM1B with bert-base-uncased, MDLM detokenisation, in the ``"padded"`` (MDLM) or ``"packed"`` (BD3LM)
    protocol. ``split``: ``"train"``, or ``"validation"``/``"test"`` (both LM1B's ``test`` split).

    ``hf_path``/``load_kwargs`` go to ``datasets.load_dataset`` (e.g. a parquet mirror of LM1B, or
    ``hf_path="text", data_files=...`` for local files with one sentence per line); ``hf_cache_dir`` is its
    ``cache_dir`` (``cache_dir`` here is *our* token cache).
    """
    protocols = {"padded": "padded", "packed": "wrap"}
    if protocol not in protocols:
        raise ValueError(f"unknown protocol={protocol!r}; valid: padded (MDLM), packed (BD3LM)")
    splits = {"train": "train", "validation": "test", "test": "test"}
    if split not in splits:
        raise ValueError(f"unknown split={split!r}; valid: {', '.join(splits)}")
    hf_split = splits[split]
    return build_token_dataset(
        hf_documents(hf_path, hf_split, cache_dir=hf_cache_dir, **load_kwargs),
        get_tokenizer("bert-base-uncased"),
        protocols[protocol],
        seq_len,
        source=_hf_source(hf_path, hf_split, load_kwargs),
        cache_dir=cache_dir,
        detokenizer="lm1b",
        num_proc=num_proc,
    )


def load_openwebtext(
    split: str = "train",
    seq_len: int = 1024,
    cache_dir: PathLike | None = None,
    hf_path: str = "openwebtext",
    n_validation_docs: int = 100_000,
    num_proc: int = 1,
    hf_cache_dir: PathLike | None = None,
    **load_kwargs: Any,
) -> PackedDataset:
    """OpenWebText in the MDLM protocol: GPT-2 BPE, wrapped to ``seq_len`` with ``<|endoftext|>``.

    The dataset has only a ``train`` split; its last ``n_validation_docs`` documents are ``"validation"``
    (``train[-100000:]``) and the rest ``"train"`` (``train[:-100000]``). ``hf_path``, ``hf_cache_dir`` and
    ``load_kwargs`` as in :func:`load_lm1b`.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"unknown split={split!r}; valid: train, validation")
    if not isinstance(n_validation_docs, int) or n_validation_docs < 1:
        raise ValueError(f"n_validation_docs must be a positive int, got n_validation_docs={n_validation_docs!r}")
    hf_split = f"train[:-{n_validation_docs}]" if split == "train" else f"train[-{n_validation_docs}:]"
    ds = build_token_dataset(
        hf_documents(hf_path, hf_split, cache_dir=hf_cache_dir, **load_kwargs),
        get_tokenizer("gpt2"),
        "wrap",
        seq_len,
        source=_hf_source(hf_path, hf_split, load_kwargs),
        cache_dir=cache_dir,
        num_proc=num_proc,
    )
    assert isinstance(ds, PackedDataset)
    return ds
