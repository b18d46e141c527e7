"""bert-base-uncased WordPiece in pure Python, reading the shipped ``vocab.txt`` (30522 entries, xz).

Behaviour follows the BERT "uncased" recipe (Devlin et al. 2019) as the Hugging Face ``BertWordPieceTokenizer``
configures it (``clean_text``, ``handle_chinese_chars``, ``strip_accents``, ``lowercase`` all on):

1. *Clean*: drop U+0000, U+FFFD and every ``Cc Cf Co Cs`` character except ``\\t \\n \\r`` (so U+0085, U+000B,
   U+000C are dropped although they are ``White_Space``); turn every remaining white-space character
   (``\\t \\n \\r`` and the rest of the Unicode ``White_Space`` set) into a space.
2. *CJK*: put spaces around every CJK Unified Ideograph (the BERT ranges), so each is its own word.
3. *Strip accents*: NFD, then drop non-spacing marks (category ``Mn``).
4. *Lower-case*, character by character.
5. *Split* on white space, and make every punctuation character (ASCII punctuation — which includes ``$ + < = >
   ^ ` | ~`` — or any Unicode ``P*`` character) a word of its own.
6. *WordPiece*: per word, greedy longest match from the left; pieces after the first carry the ``##`` prefix.
   A word with no complete segmentation, or longer than 100 characters, becomes one ``[UNK]``.

Agreement with HF ``tokenizers`` 0.23 (checked over every code point, each between two letters): identical
except 503 code points that were assigned in recent Unicode versions (e.g. U+061D, U+0890..U+089F), where our
Python's Unicode database (14.0 in Python 3.11) and HF's older Rust tables disagree on the category.

``encode`` adds no special tokens; ``[CLS]``/``[SEP]``/``[PAD]`` are exposed as ``bos_id``/``eos_id``/``pad_id``
(and ``cls_id``/``sep_id``) for the protocols that need them.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable

from oemdm_spec.data.tokenizer import Tokenizer, read_data_file

_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),  # sic: HF tokenizers starts at 0x2B920 (Google BERT: 0x2B820); we match HF
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_ASCII_PUNCT = frozenset(chr(c) for c in [*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)])
MAX_INPUT_CHARS_PER_WORD = 100
# Unassigned code points (Cn) are kept, as the HF Rust normaliser does (Google's original Python removes them).
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_punct(c: str) -> bool:
    return c in _ASCII_PUNCT or unicodedata.category(c).startswith("P")


def _clean_char(c: str) -> str:
    """Steps 1–2 for one character: its replacement ("" to drop it)."""
    if c in ("\t", "\n", "\r"):
        return " "
    if c == "\x00" or c == "\ufffd" or unicodedata.category(c) in _CONTROL_CATEGORIES:
        return ""  # removal comes first: U+0085, U+000B, U+000C are controls, dropped, not spaces
    if c in _WHITE_SPACE:
        return " "
    if _is_cjk(ord(c)):
        return f" {c} "
    return c


def _fold_char(c: str) -> str:
    """Steps 3b–4 for one character of the NFD text: drop non-spacing marks, lower-case the rest."""
    return "" if unicodedata.category(c) == "Mn" else c.lower()


class _LazyTable(dict):
    """A ``str.translate`` table filled on first use of each code point (the text's alphabet is small)."""

    def __init__(self, fn: Callable[[str], str]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, cp: int) -> str:
        out = self[cp] = self.fn(chr(cp))
        return out


_CLEAN = _LazyTable(_clean_char)
_FOLD = _LazyTable(_fold_char)


def normalize(text: str) -> str:
    """Steps 1–4 of the module docstring: clean, pad CJK, strip accents, lower-case (per character, so no
    context rules such as Greek final sigma — as the reference implementation does)."""
    text = text.translate(_CLEAN)
    if not text.isascii():
        text = unicodedata.normalize("NFD", text)
    return text.translate(_FOLD)


@functools.cache
def _word_pattern() -> re.Pattern[str]:
    ranges: list[list[int]] = []
    category = unicodedata.category
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if category(c)[0] == "P" or c in _ASCII_PUNCT:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    cls = "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)
    # After normalize() the only white space left is " " (lower()/NFD of a non-space never gives a space).
    return re.compile(f"[^ {cls}]+|[{cls}]")


def basic_tokenize(text: str) -> list[str]:
    """Steps 1–5: the list of words (each punctuation character is a word of its own)."""
    return _word_pattern().findall(normalize(text))


class BertWordPieceTokenizer(Tokenizer):
    """bert-base-uncased: 30522 ids; ``[PAD]=0``, ``[UNK]=100``, ``[CLS]=101``, ``[SEP]=102``, ``[MASK]=103``."""

    def __init__(self) -> None:
        raw = read_data_file("bert_base_uncased_vocab.txt.xz")
        tokens = raw.decode("utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self.itos: list[str] = tokens
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        if len(self.vocab) != len(tokens):
            raise ValueError("vocab.txt has duplicate entries")
        self.name = "bert-base-uncased"
        self.vocab_size = len(tokens)
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.bos_id = self.vocab["[CLS]"]
        self.sep_id = self.eos_id = self.vocab["[SEP]"]
        self.mask_token_id = self.vocab["[MASK]"]
        self.special_ids = frozenset(i for t, i in self.vocab.items() if t.startswith("[") and t.endswith("]"))
        self.fingerprint = hashlib.sha256(b"bert-wordpiece-v1\0" + raw).hexdigest()
        self._cache: dict[str, list[int]] = {}

    def wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first segmentation of one word (step 6)."""
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            ids = [self.unk_id]
        else:
            ids = []
            start = 0
            while start < len(word):
                end = len(word)
                found = None
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    found = self.vocab.get(piece)
                    if found is not None:
                        break
                    end -= 1
                if found is None:
                    ids = [self.unk_id]
                    break
                ids.append(found)
                start = end
        if len(self._cache) < 500_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for word in basic_tokenize(text):
            out.extend(self.wordpiece(word))
        return out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Join tokens with spaces and glue ``##`` continuations to the previous token.

        The text is the normalised (lower-cased, accent-free, punctuation-spaced) form, not the original.
        """
        pieces: list[str] = []
        for i in self._check_ids(ids):
            if skip_special_tokens and i in self.special_ids:
                continue
            tok = self.itos[i]
            if tok.startswith("##") and pieces:
                pieces[-1] += tok[2:]
            else:
                pieces.append(tok)
        return " ".join(pieces)
