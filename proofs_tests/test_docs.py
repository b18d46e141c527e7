"""Docs as executable derivations: run the ```python blocks of the documentation pages.

Which blocks run:

- every page under ``docs/theory/``: all of its ```python blocks;
- any other ``docs/**/*.md`` page that contains a line ``<!-- exec -->``: all of its ```python blocks.

A block whose fence is ```python no-exec is shown but never run. The blocks of one page run in order in one
fresh namespace (so later blocks see earlier names), with the repository root as the working directory;
any exception or failed assert fails the page's test.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXEC_MARKER = re.compile(r"^<!--\s*exec\s*-->\s*$", re.M)
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```\s*$", re.M | re.S)


def executable_pages() -> list[Path]:
    """The pages whose code blocks CI executes (see the module docstring)."""
    pages = sorted((DOCS / "theory").glob("*.md"))
    for page in sorted(DOCS.rglob("*.md")):
        if page.parent != DOCS / "theory" and EXEC_MARKER.search(page.read_text(encoding="utf-8")):
            pages.append(page)
    return pages


def code_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of each executable ```python block of a page."""
    out = []
    for match in FENCE.finditer(text):
        if "no-exec" in match.group(1):
            continue
        out.append((text.count("\n", 0, match.start(2)) + 1, match.group(2)))
    return out


def test_theory_pages_exist_and_have_code() -> None:
    pages = sorted((DOCS / "theory").glob("*.md"))
    assert len(pages) >= 6
    for page in pages:
        assert code_blocks(page.read_text(encoding="utf-8")), f"{page} has no executable code"


def test_index_links_every_theory_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in sorted((DOCS / "theory").glob("*.md")):
        assert f"theory/{page.name}" in index, f"docs/index.md does not link {page.name}"
    assert "architecture.md" in index


@pytest.mark.parametrize("page", executable_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    os.environ.setdefault("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for line, source in code_blocks(page.read_text(encoding="utf-8")):
        code = compile(source, f"{page.relative_to(ROOT)}:{line}", "exec")
        exec(code, namespace)  # noqa: S102 - the docs are part of the test suite by design


def test_block_extraction_rules() -> None:
    page = (
        "text\n```python\nx = 1\n```\n\n```python no-exec\nraise SystemExit\n```\n"
        "```bash\nls\n```\n```python\ny = x + 1\n```\n"
    )
    blocks = code_blocks(page)
    assert [src for _, src in blocks] == ["x = 1\n", "y = x + 1\n"]
    assert [line for line, _ in blocks] == [3, 13]
    assert EXEC_MARKER.search("# Title\n<!-- exec -->\n") and not EXEC_MARKER.search("see `<!-- exec -->` above")
