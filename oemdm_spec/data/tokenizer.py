"""Offline tokenizers with one small interface, and the ``get_tokenizer`` registry.

Every tokenizer has ``name``, ``vocab_size``, ``encode(text) -> list[int]`` and ``decode(ids) -> str``, plus
``fingerprint`` (a hex digest of the algorithm version and the vocabulary files — the cache key of tokenised
corpora) and the special ids it has (``unk_id``, ``pad_id``, ``bos_id``, ``eos_id``; ``None`` where absent).
All vocabulary files are shipped inside the package, so nothing is downloaded. GPT-2 BPE is run by ``tiktoken``
and bert-base-uncased WordPiece by Hugging Face ``tokenizers`` (imported when the tokenizer is first built; the
``char`` tokenizer needs neither). ``encode_batch`` is the batched call the cache builders use.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import lzma
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any


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


def byte_to_unicode_table() -> list[str]:
    """GPT-2's byte -> printable-character table (Radford et al. 2019, ``encoder.py: bytes_to_unicode``).

    The 188 printable Latin-1 bytes stand for themselves; the other 68 bytes get U+0100 onwards, in byte order.
    ``encoder.json`` spells every token through this table, so it is needed to turn it into byte ranks.
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    table, extra = [], 0
    for b in range(256):
        if b in keep:
            table.append(chr(b))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


def _require(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {what} tokenizer needs the '{module}' package: pip install 'oemdm_spec[data]' "
            f"(or pip install {module}); the default 'char' tokenizer needs neither tiktoken nor tokenizers"
        ) from exc


def _files_digest(tag: str, version: str, *names: str) -> str:
    h = hashlib.sha256(f"{tag}\0{version}\0".encode())
    for name in names:
        h.update(hashlib.sha256(read_data_file(name)).digest())
    return h.hexdigest()


#: GPT-2's pre-tokenisation pattern (OpenAI ``gpt-2/src/encoder.py``; tiktoken's ``r50k_base`` uses the same).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-level BPE run by ``tiktoken``, built offline from the shipped ``encoder.json``/``vocab.bpe``.

    ``encode`` is ``encode_ordinary`` (the literal text ``<|endoftext|>`` is encoded as text, never as id 50256);
    put ``eos_id`` between documents yourself. ``fingerprint`` covers the library, its version and the files.
    """

    def __init__(self) -> None:
        tiktoken = _require("tiktoken", "gpt2")
        byte_of = {c: b for b, c in enumerate(byte_to_unicode_table())}
        encoder: dict[str, int] = json.loads(read_data_file("gpt2_encoder.json.xz"))
        eot = encoder.pop("<|endoftext|>")
        ranks = {bytes(byte_of[c] for c in tok): i for tok, i in encoder.items()}
        # vocab.bpe's merges must be exactly the order of encoder.json's ids (tiktoken ranks merges by id).
        merges = read_data_file("gpt2_vocab.bpe.xz").decode("utf-8").split("\n")[1:]
        for rank, line in enumerate((m for m in merges if m), start=256):
            a, b = line.split(" ")
            if ranks.get(bytes(byte_of[c] for c in a + b)) != rank:
                raise ValueError(f"gpt2 vocabulary files disagree at merge {rank}: {line!r}")
        self._enc = tiktoken.Encoding(
            name="gpt2-oemdm", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": eot}
        )
        self.name = "gpt2"
        self.library = f"tiktoken=={tiktoken.__version__}"
        self.vocab_size = self._enc.n_vocab
        self.bos_id = self.eos_id = eot
        self.fingerprint = _files_digest("gpt2-tiktoken-v1", self.library, "gpt2_encoder.json.xz", "gpt2_vocab.bpe.xz")

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts), num_threads=1)

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(self._check_ids(ids))

    def __getstate__(self) -> dict[str, Any]:  # worker processes rebuild the encoder from the shipped files
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


class BertTokenizer(Tokenizer):
    """bert-base-uncased WordPiece run by Hugging Face ``tokenizers`` from the shipped ``vocab.txt``.

    Configured as HF ``BertWordPieceTokenizer(lowercase=True)`` (BertNormalizer with clean_text,
    handle_chinese_chars, strip_accents, lowercase; BertPreTokenizer; WordPiece, ``##`` prefix, ``[UNK]``, words
    over 100 characters become ``[UNK]``) — but the special tokens are **not** registered as added tokens, so the
    text ``"[PAD]"`` is encoded as ``[ pad ]`` and ids ``0, 101, 102`` appear only where a protocol puts them.
    ``encode`` adds no special tokens; ``[CLS]``/``[SEP]``/``[PAD]`` are ``bos_id``/``eos_id``/``pad_id``.
    """

    def __init__(self) -> None:
        tk = _require("tokenizers", "bert-base-uncased")
        self.itos = read_data_file("bert_base_uncased_vocab.txt.xz").decode("utf-8").split("\n")
        if self.itos and self.itos[-1] == "":
            self.itos.pop()
        vocab = {t: i for i, t in enumerate(self.itos)}
        t = tk.Tokenizer(tk.models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        t.normalizer = tk.normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
        )
        t.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        t.decoder = tk.decoders.WordPiece(prefix="##", cleanup=False)
        self._tok = t
        self.name = "bert-base-uncased"
        self.library = f"tokenizers=={tk.__version__}"
        self.vocab_size = len(self.itos)
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.cls_id, self.sep_id, self.mask_token_id = vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"]
        self.bos_id, self.eos_id = self.cls_id, self.sep_id
        self._special = {self.pad_id, self.cls_id, self.sep_id, self.mask_token_id}
        self.fingerprint = _files_digest("bert-tokenizers-v1", self.library, "bert_base_uncased_vocab.txt.xz")

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = self._check_ids(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special]
        # Decode token by token through the vocabulary: HF's decode drops ids it considers special only when
        # they are registered, and ours are not, so the result is the plain WordPiece join of the tokens.
        return self._tok.decoder.decode([self.itos[i] for i in ids])

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


_REGISTRY: dict[str, Callable[[], Tokenizer]] = {
    "char": CharTokenizer,
    "gpt2": GPT2Tokenizer,
    "bert-base-uncased": BertTokenizer,
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
