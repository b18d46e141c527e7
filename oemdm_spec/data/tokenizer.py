"""Offline tokenizers with one small interface, and the ``get_tokenizer`` registry.

Every tokenizer has ``name``, ``vocab_size``, ``encode(text) -> list[int]`` and ``decode(ids) -> str``, plus
``fingerprint`` (a hex digest of the algorithm version and the vocabulary files — the cache key of tokenised
corpora) and the special ids it has (``unk_id``, ``pad_id``, ``bos_id``, ``eos_id``; ``None`` where absent).
All vocabulary files are shipped inside the package, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
from collections.abc import Callable, Iterable, Sequence
from importlib import resources


def read_data_file(name: str) -> bytes:
    """Bytes of a file shipped under ``oemdm_spec/data/files/`` (``.xz`` files are decompressed)."""
    data = resources.files("oemdm_spec.data").joinpath("files", name).read_bytes()
    return lzma.decompress(data) if name.endswith(".xz") else data


class Tokenizer:
    """Base class: the shared interface. Subclasses set the attributes and implement encode/decode."""

    name: str
    vocab_size: int
    fingerprint: str
    unk_id: int | None = None
    pad_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Encode several texts (a loop; subclasses may share caches across texts)."""
        return [self.encode(t) for t in texts]

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        out = [int(i) for i in ids]
        for i in out:
            if i < 0 or i >= self.vocab_size:
                raise ValueError(f"{self.name} tokenizer: id {i} in ids is outside [0, {self.vocab_size})")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """Character-level tokenizer over a fixed, shipped character set.

    The vocabulary is every distinct character of the embedded Shakespeare corpus (all splits), sorted by code
    point, stored in ``files/char_vocab.json`` so ids never change. Id ``k < len(chars)`` is ``chars[k]``; the
    last id, ``unk_id = len(chars)``, stands for any other character and decodes to ``unk_char`` (U+FFFD).
    """

    unk_char = "\ufffd"

    def __init__(self, chars: str | None = None) -> None:
        raw = read_data_file("char_vocab.json")
        if chars is None:
            chars = json.loads(raw)["chars"]
        if len(set(chars)) != len(chars) or not chars:
            raise ValueError(f"chars must be non-empty and without repeats, got {chars!r}")
        self.chars = chars
        self.name = "char"
        self.unk_id = len(chars)
        self.vocab_size = len(chars) + 1
        self._stoi = {c: i for i, c in enumerate(chars)}
        self.fingerprint = hashlib.sha256(b"char-v1\0" + chars.encode("utf-8")).hexdigest()

    def encode(self, text: str) -> list[int]:
        get, unk = self._stoi.get, self.unk_id
        return [get(c, unk) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        chars, unk = self.chars, self.unk_char
        return "".join(chars[i] if i != self.unk_id else unk for i in self._check_ids(ids))


def _make_gpt2() -> Tokenizer:
    from oemdm_spec.data.bpe import GPT2Tokenizer

    return GPT2Tokenizer()


def _make_bert() -> Tokenizer:
    from oemdm_spec.data.wordpiece import BertWordPieceTokenizer

    return BertWordPieceTokenizer()


_REGISTRY: dict[str, Callable[[], Tokenizer]] = {
    "char": CharTokenizer,
    "gpt2": _make_gpt2,
    "bert-base-uncased": _make_bert,
}

#: The valid names of :func:`get_tokenizer`.
TOKENIZER_NAMES: Sequence[str] = tuple(_REGISTRY)


@functools.cache
def _shared(name: str) -> Tokenizer:
    return _REGISTRY[name]()


def get_tokenizer(name: str) -> Tokenizer:
    """Return the (shared, cached) tokenizer called ``name``: ``"char"``, ``"gpt2"`` or ``"bert-base-uncased"``.

    Raises ``ValueError`` listing the valid names for any other name.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown tokenizer name={name!r}; valid names: {', '.join(TOKENIZER_NAMES)}")
    return _shared(name)
