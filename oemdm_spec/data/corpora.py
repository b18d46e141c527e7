"""One entry point for every corpus: :func:`open_corpus` (training and zero-shot evaluation data).

``open_corpus(spec, tokenizer=…, seq_len=…, protocol=…)`` returns a :class:`Corpus`: the tokenizer, the protocol and,
per split, a :class:`SplitData` over a cached ``np.memmap`` (tokenised once, by one process, under a file lock;
never the whole corpus in RAM after the build; never re-tokenised on resume).

Specs (``docs/data.md`` §7 gives the published protocol behind each):

==================  ==========================================================================================
``"embedded"``      the shipped Shakespeare corpus (default: char tokenizer, ``stream``, seq_len 128).
``"lm1b"``          LM1B, MDLM protocol: bert-base-uncased, one sentence per row, ``padded`` to 128.
``"lm1b-packed"``   LM1B, BD3LM protocol: bert-base-uncased, ``wrap`` into 128-token blocks.
``"owt"``           OpenWebText, MDLM protocol: GPT-2, ``wrap`` into 1024-token blocks, last 100,000 docs = val.
a path              a ``.txt`` file, a directory of ``.txt`` / ``.jsonl`` / ``.parquet`` files, or a Hugging Face
                    dataset saved with ``save_to_disk`` (default: char tokenizer, ``stream``, seq_len 128).
``"lm1b:PATH"``,    local data in the LM1B / LM1B-packed / OWT protocol (their tokenizer, protocol, seq_len,
``"owt:PATH"`` …    detokenizer and split rule), e.g. a local copy of the benchmark.
==================  ==========================================================================================
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oemdm_spec.data.benchmarks import hf_documents, load_embedded_dataset
from oemdm_spec.data.corpus import WORK_SEPARATOR, load_embedded_works_split
from oemdm_spec.data.protocols import PROTOCOLS, build_token_dataset
from oemdm_spec.data.sequences import PackedDataset, PaddedSentenceDataset
from oemdm_spec.data.tokenizer import Tokenizer, get_tokenizer

PathLike = str | os.PathLike[str]
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                  "dev": "validation", "test": "test"}

#: Defaults of each named spec: tokenizer, seq_len, protocol (any of them can be overridden).
SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    "embedded": {"tokenizer": "char", "seq_len": 128, "protocol": "stream"},
    "lm1b": {"tokenizer": "bert-base-uncased", "seq_len": 128, "protocol": "padded"},
    "lm1b-packed": {"tokenizer": "bert-base-uncased", "seq_len": 128, "protocol": "wrap"},
    "owt": {"tokenizer": "gpt2", "seq_len": 1024, "protocol": "wrap"},
}
_PATH_DEFAULTS = {"tokenizer": "char", "seq_len": 128, "protocol": "stream"}
_DETOKENIZER = {"lm1b": "lm1b", "lm1b-packed": "lm1b"}
#: A path spec without split-named files: document k is validation if k % 20 == 18, test if k % 20 == 19.
HOLDOUT_PERIOD = 20
OWT_VALIDATION_DOCS = 100_000


def _parse_spec(spec: str) -> tuple[str | None, Path | None]:
    """``(named spec or None, path or None)``."""
    if not isinstance(spec, (str, os.PathLike)) or not str(spec):
        raise ValueError(f"spec must be 'embedded', 'lm1b', 'lm1b-packed', 'owt' or a path, got spec={spec!r}")
    s = str(spec)
    if s in SPEC_DEFAULTS:
        return s, None
    name, sep, rest = s.partition(":")
    if sep and name in ("lm1b", "lm1b-packed", "owt") and rest:
        return name, Path(rest).expanduser()
    return None, Path(s).expanduser()


def protocol_defaults(spec: str) -> dict[str, Any]:
    """``{"tokenizer", "seq_len", "protocol"}`` of a spec, e.g. ``protocol_defaults("owt")`` →
    ``{"tokenizer": "gpt2", "seq_len": 1024, "protocol": "wrap"}``. A preset names its data spec and takes these;
    any key given explicitly (``--tokenizer`` …) overrides them."""
    name, _ = _parse_spec(spec)
    return dict(SPEC_DEFAULTS[name] if name else _PATH_DEFAULTS)


# --------------------------------------------------------------------------------------------------------------
# The per-split dataset the trainer sees.
class SplitData:
    """One split: ``get_batch``/``iter_eval_batches`` over the cached memmap, plus text statistics.

    ``get_batch(step, batch_size, seed, rank=0, world_size=1)`` → LongTensor ``(batch_size, seq_len)``, a pure
    function of its arguments (rank ``r`` of ``W`` gets rows ``[r*B, (r+1)*B)`` of the global batch ``B*W``).
    With ``with_valid=True`` it returns ``(ids, valid)``, ``valid`` a BoolTensor, **True at real tokens** (all
    True for the ``stream``/``wrap`` protocols; False at padding for ``padded``). ``pad_id`` is the padding id
    (``None`` without padding); padding never occurs inside a real sequence, so also ``valid == (ids != pad_id)``.
    """

    def __init__(self, name: str, inner: PackedDataset | PaddedSentenceDataset, protocol: str, tok: Tokenizer):
        self.name, self.protocol, self._inner = name, protocol, inner
        self.seq_len: int = inner.seq_len
        self.vocab_size: int = tok.vocab_size
        self.pad_id: int | None = inner.pad_id if isinstance(inner, PaddedSentenceDataset) else None
        self.info: dict[str, Any] = dict(getattr(inner, "info", {}))
        self.cache_path: Path | None = getattr(inner, "cache_path", None)

    # -- sizes ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._inner)

    @property
    def n_real_tokens(self) -> int:
        """Real (non-padding) tokens in the sequences of this split — the denominator of a per-token bound over
        the whole split (for stream/wrap: ``len * seq_len``; the dropped tail is not counted)."""
        if isinstance(self._inner, PaddedSentenceDataset):
            return int(np.asarray(self._inner.lengths, dtype=np.int64).sum())
        return len(self) * self.seq_len

    def text_stats(self) -> dict[str, Any]:
        """``n_documents``, ``n_chars``, ``n_bytes`` (UTF-8) of the split's text as tokenised, ``n_tokens`` (ids
        in the sequences, padding excluded) and ``chars_per_token`` / ``bytes_per_token``, to turn a per-token
        bound into per-character / per-byte: ``bits_per_char = bits_per_token / chars_per_token``."""
        n_tok = self.n_real_tokens
        n_chars, n_bytes = self.info.get("n_chars"), self.info.get("n_bytes")
        stats = {"n_documents": self.info.get("n_documents"), "n_chars": n_chars, "n_bytes": n_bytes,
                 "n_tokens": n_tok}
        # Text behind the stored sequences: for wrap/stream a dropped tail shrinks it a little; scale by the
        # fraction of document tokens kept so the ratio describes the evaluated tokens.
        doc_tok = self.info.get("n_doc_tokens") or 0
        kept = 1.0
        if self.protocol != "padded" and self.info.get("n_tokens"):
            kept = min(1.0, n_tok / self.info["n_tokens"])
        stats["chars_per_token"] = n_chars * kept / n_tok if n_chars is not None and doc_tok else None
        stats["bytes_per_token"] = n_bytes * kept / n_tok if n_bytes is not None and doc_tok else None
        return stats

    # -- batches ----------------------------------------------------------------------------------------------
    def _split(self, out: Any, with_valid: bool) -> Any:
        if isinstance(out, tuple):  # padded: (x, pad_mask)
            x, pad_mask = out
            return (x, ~pad_mask) if with_valid else x
        return (out, torch.ones_like(out, dtype=torch.bool)) if with_valid else out

    def get_batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, *,
                  with_valid: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch_size, int) and isinstance(world_size, int) and batch_size * world_size > len(self):
            raise ValueError(
                f"split {self.name!r} has {len(self)} sequences of seq_len={self.seq_len}, fewer than one global "
                f"batch of batch_size={batch_size} x world_size={world_size}; use a larger corpus or a smaller batch"
            )
        return self._split(self._inner.get_batch(step, batch_size, seed, rank, world_size), with_valid)

    def iter_eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1, *,
                          with_valid: bool = False) -> Iterator[Any]:
        for out in self._inner.iter_eval_batches(batch_size, rank, world_size):
            yield self._split(out, with_valid)

    def valid_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """True at real tokens of ``ids`` (a batch of this split)."""
        if self.pad_id is None:
            return torch.ones_like(ids, dtype=torch.bool)
        return ids != self.pad_id

    def __repr__(self) -> str:
        return f"SplitData({self.name!r}, protocol={self.protocol!r}, sequences={len(self)}, seq_len={self.seq_len})"


@dataclass
class Corpus:
    """What :func:`open_corpus` returns: ``tokenizer``, ``protocol``, ``seq_len``, ``splits`` (name → SplitData)."""

    spec: str
    tokenizer: Tokenizer
    protocol: str
    seq_len: int
    splits: dict[str, SplitData] = field(default_factory=dict)

    def __getitem__(self, split: str) -> SplitData:
        if split not in self.splits:
            raise KeyError(f"split {split!r} was not opened; opened: {', '.join(self.splits)}")
        return self.splits[split]

    @property
    def train(self) -> SplitData:
        return self["train"]

    @property
    def validation(self) -> SplitData:
        return self["validation"]

    @property
    def pad_id(self) -> int | None:
        return self.tokenizer.pad_id if self.protocol == "padded" else None


# --------------------------------------------------------------------------------------------------------------
# Local documents.
_EXTS = (".txt", ".jsonl", ".parquet")


def _is_saved_hf(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def _split_of(rel: Path) -> str | None:
    parts = list(rel.parts)
    if len(parts) > 1 and parts[0].lower() in _SPLIT_ALIASES:
        return _SPLIT_ALIASES[parts[0].lower()]
    m = re.match(r"^(train|validation|valid|val|dev|test)(?=$|[-_.\d])", rel.name.lower())
    return _SPLIT_ALIASES[m.group(1)] if m else None


def _data_files(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _EXTS and not p.name.startswith("."))
    if not files:
        raise ValueError(f"spec={str(root)!r}: directory holds no .txt, .jsonl or .parquet files")
    return files


def _file_docs(path: Path, text_column: str) -> Iterator[str]:
    if path.suffix == ".txt":
        yield path.read_text(encoding="utf-8")
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or text_column not in row:
                    keys = list(row) if isinstance(row, dict) else type(row).__name__
                    raise ValueError(f"{path}:{lineno}: text_column={text_column!r} not in the row (keys: {keys})")
                yield row[text_column]
    else:
        import pyarrow.parquet as pq  # noqa: PLC0415 - comes with `datasets`

        pf = pq.ParquetFile(path)
        if text_column not in pf.schema_arrow.names:
            raise ValueError(f"{path}: text_column={text_column!r} not in the columns {pf.schema_arrow.names}")
        for batch in pf.iter_batches(columns=[text_column], batch_size=1024):
            yield from batch.column(0).to_pylist()


def _digest_files(files: Sequence[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root) if p != root else p.name).encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        h.update(b"\1")
    return h.hexdigest()


def _holdout(docs: Iterable[str], split: str, rule: str, n_docs: int | None) -> Iterator[str]:
    """Split one document stream: ``rule="mod"`` (k % 20: 18 → validation, 19 → test) or ``"last"`` (the last
    ``n_validation`` documents → validation; no test split)."""
    if rule == "mod":
        want = {"train": None, "validation": HOLDOUT_PERIOD - 2, "test": HOLDOUT_PERIOD - 1}[split]
        for k, d in enumerate(docs):
            r = k % HOLDOUT_PERIOD
            if (want is None and r < HOLDOUT_PERIOD - 2) or r == want:
                yield d
        return
    n_total, n_val = n_docs  # type: ignore[misc]
    cut = max(0, n_total - n_val)
    for k, d in enumerate(docs):
        if (split == "train") == (k < cut):
            yield d


@dataclass
class _Source:
    """Documents of one split (a zero-argument callable) and the string naming them in the cache key."""

    documents: Callable[[], Iterable[str]]
    source: str


def _path_sources(path: Path, split: str, text_column: str, owt_rule: int | None) -> _Source:
    if not path.exists():
        raise ValueError(f"spec path {str(path)!r} does not exist")
    if _is_saved_hf(path):
        return _hf_disk_source(path, split, text_column, owt_rule)
    if path.is_file():
        if path.suffix != ".txt":
            raise ValueError(f"spec={str(path)!r}: a single file must be .txt (or give a directory)")
        digest = _digest_files([path], path.parent)
        bounds = {"train": (0.0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1.0)}[split]

        def one() -> Iterator[str]:  # today's rule for a single text file: 90/5/5 by characters
            text = path.read_text(encoding="utf-8")
            n = len(text)
            yield text[int(bounds[0] * n) : int(bounds[1] * n)]

        return _Source(one, f"txt:{digest}:{split}:90/5/5")
    files = _data_files(path)
    named = {p: _split_of(p.relative_to(path)) for p in files}
    digest = _digest_files(files, path)
    if any(named.values()):
        unnamed = [str(p) for p, s in named.items() if s is None]
        if unnamed:
            raise ValueError(f"spec={str(path)!r}: some files name a split and these do not: {unnamed[:3]}")
        mine = [p for p in files if named[p] == split]
        if not mine:
            raise ValueError(f"spec={str(path)!r}: no files for split={split!r} (files named by split: "
                             f"{sorted({s for s in named.values() if s})})")
        return _Source(lambda: (d for p in mine for d in _file_docs(p, text_column)),
                       f"dir:{digest}:{split}:named:{text_column}")
    all_docs = lambda: (d for p in files for d in _file_docs(p, text_column))
    if owt_rule is not None:
        if split == "test":
            raise ValueError(f"spec owt:{path}: the OpenWebText protocol has no test split (train, validation)")
        n_total = sum(1 for _ in all_docs())
        return _Source(lambda: _holdout(all_docs(), split, "last", (n_total, owt_rule)),
                       f"dir:{digest}:{split}:last{owt_rule}:{text_column}")
    return _Source(lambda: _holdout(all_docs(), split, "mod", None), f"dir:{digest}:{split}:mod20:{text_column}")


def _hf_disk_source(path: Path, split: str, text_column: str, owt_rule: int | None) -> _Source:
    from oemdm_spec.data.benchmarks import _require_datasets  # noqa: PLC0415

    datasets = _require_datasets()
    meta = [p for p in sorted(path.rglob("*.json")) if p.name in ("dataset_dict.json", "state.json")]
    digest = _digest_files(meta + sorted(path.rglob("*.arrow")), path)
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        names = {_SPLIT_ALIASES.get(k.lower()): k for k in loaded}
        if split in names:
            ds, rule = loaded[names[split]], None
        elif set(names) - {None} == {"train"}:
            ds, rule = loaded[names["train"]], "split"
        else:
            raise ValueError(f"spec={str(path)!r}: saved DatasetDict has no split {split!r} (has {list(loaded)})")
    else:
        ds, rule = loaded, "split"
    if text_column not in ds.column_names:
        raise ValueError(f"spec={str(path)!r}: text_column={text_column!r} not in the columns {ds.column_names}")

    def rows() -> Iterator[str]:
        for batch in ds.iter(batch_size=1000):
            yield from batch[text_column]

    if rule is None:
        return _Source(rows, f"hfdisk:{digest}:{split}:{text_column}")
    if owt_rule is not None:
        if split == "test":
            raise ValueError(f"spec owt:{path}: the OpenWebText protocol has no test split (train, validation)")
        return _Source(lambda: _holdout(rows(), split, "last", (len(ds), owt_rule)),
                       f"hfdisk:{digest}:{split}:last{owt_rule}:{text_column}")
    return _Source(lambda: _holdout(rows(), split, "mod", None), f"hfdisk:{digest}:{split}:mod20:{text_column}")


def _hub_source(name: str, split: str, text_column: str, hf_kwargs: dict[str, Any]) -> _Source:
    kw = dict(hf_kwargs)
    if name.startswith("lm1b"):
        if split not in SPLITS:
            raise ValueError(f"unknown split={split!r} for spec {name!r}; valid: {', '.join(SPLITS)}")
        hf_path, hf_split = kw.pop("path", "lm1b"), {"train": "train", "validation": "test", "test": "test"}[split]
    else:
        if split not in ("train", "validation"):
            raise ValueError(f"unknown split={split!r} for spec 'owt'; valid: train, validation (OpenWebText has "
                             "only a train split, whose last 100,000 documents are validation)")
        hf_path = kw.pop("path", "openwebtext")
        n_val = kw.pop("n_validation_docs", OWT_VALIDATION_DOCS)
        hf_split = f"train[:-{n_val}]" if split == "train" else f"train[-{n_val}:]"
    key_kw = {k: str(v) for k, v in sorted(kw.items()) if k != "cache_dir"}
    if "data_files" in kw:
        from oemdm_spec.data.benchmarks import _files_digest  # noqa: PLC0415

        key_kw["data_files"] = _files_digest(kw["data_files"])
    return _Source(hf_documents(hf_path, hf_split, text_column, **kw), f"hf:{hf_path}:{hf_split}:{key_kw}")


# --------------------------------------------------------------------------------------------------------------
def open_corpus(
    spec: str = "embedded",
    *,
    tokenizer: str | None = None,
    seq_len: int | None = None,
    protocol: str | None = None,
    splits: Sequence[str] = ("train", "validation"),
    text_column: str = "text",
    cache_dir: PathLike | None = None,
    num_proc: int | None = None,
    hf_kwargs: dict[str, Any] | None = None,
) -> Corpus:
    """Open ``splits`` of the corpus ``spec`` (see the module docstring), tokenised with ``tokenizer`` into
    ``seq_len``-token sequences by ``protocol`` (``"stream"``, ``"wrap"`` or ``"padded"``); ``None`` takes the
    spec's default (:func:`protocol_defaults`).

    * ``text_column``: the text field of ``.jsonl`` / ``.parquet`` files and saved HF datasets.
    * ``cache_dir``: the token cache (default ``$OEMDM_CACHE`` or ``~/.cache/oemdm_spec``). Every process of a
      distributed run may call this at once: one builds each entry under a file lock, the others wait and read it.
    * ``num_proc``: encoder processes for a build (default: 1 for ``char``, else ``min(8, cpu_count)``).
    * ``hf_kwargs``: for ``"lm1b"``/``"lm1b-packed"``/``"owt"``: ``path`` (the hub id, default ``lm1b`` /
      ``openwebtext``), ``n_validation_docs`` (owt), and any ``datasets.load_dataset`` keyword.

    Raises ``ValueError`` naming the argument and value for a missing path, an empty corpus or split, a missing
    text column, an unknown split/protocol/tokenizer, or a protocol the tokenizer cannot serve (wrap/padded need
    BOS/EOS ids, which ``char`` lacks).
    """
    name, path = _parse_spec(spec)
    defaults = protocol_defaults(spec)
    tok_name = defaults["tokenizer"] if tokenizer is None else tokenizer
    seq_len = defaults["seq_len"] if seq_len is None else seq_len
    protocol = defaults["protocol"] if protocol is None else protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol={protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got seq_len={seq_len!r}")
    if isinstance(splits, str) or not splits:
        raise ValueError(f"splits must be a non-empty sequence of split names, got splits={splits!r}")
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"unknown split={s!r}; valid: {', '.join(SPLITS)}")
    if not isinstance(text_column, str) or not text_column:
        raise ValueError(f"text_column must be a non-empty string, got text_column={text_column!r}")
    tok = get_tokenizer(tok_name)
    if num_proc is None:
        num_proc = 1 if tok.name == "char" else max(1, min(8, os.cpu_count() or 1))
    detok = _DETOKENIZER.get(name) if name else None
    corpus = Corpus(str(spec), tok, protocol, seq_len)
    for split in splits:
        if name == "embedded":
            inner = _open_embedded(tok, split, protocol, seq_len, cache_dir, num_proc)
        else:
            if path is not None:
                src = _path_sources(path, split, text_column,
                                    (hf_kwargs or {}).get("n_validation_docs", OWT_VALIDATION_DOCS)
                                    if name == "owt" else None)
            else:
                src = _hub_source(name, split, text_column, hf_kwargs or {})  # type: ignore[arg-type]
            try:
                inner = build_token_dataset(src.documents, tok, protocol, seq_len, src.source, cache_dir,
                                            detokenizer=detok, separator_ids=_separator(tok, protocol),
                                            num_proc=num_proc)
            except ValueError as exc:
                raise ValueError(f"spec={str(spec)!r} split={split!r}: {exc}") from exc
        corpus.splits[split] = SplitData(split, inner, protocol, tok)
    return corpus


def _separator(tok: Tokenizer, protocol: str) -> list[int] | None:
    """Stream protocol: EOS between documents, or for a tokenizer without EOS (char) the corpus separator."""
    if protocol != "stream":
        return None
    return [tok.eos_id] if tok.eos_id is not None else tok.encode(WORK_SEPARATOR)


def _open_embedded(tok: Tokenizer, split: str, protocol: str, seq_len: int, cache_dir: PathLike | None,
                   num_proc: int) -> PackedDataset | PaddedSentenceDataset:
    if protocol == "stream":  # exactly the ids of load_embedded_dataset (and of today's trainer for char)
        return load_embedded_dataset(tok.name, split, seq_len, cache_dir)
    works = load_embedded_works_split()[split]
    digest = hashlib.sha256("\0".join(f"{n}\0{t}" for n, t in works.items()).encode("utf-8")).hexdigest()
    return build_token_dataset(lambda: works.values(), tok, protocol, seq_len,
                               f"embedded-shakespeare:{split}:sha256={digest}", cache_dir, num_proc=num_proc)
