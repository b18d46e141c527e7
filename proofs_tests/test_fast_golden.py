"""Bitwise regression: the fast path reproduces the recorded golden runs (proofs_tests/golden/runs.json).

A restructuring of the fast path must not change a single bit of what it computes: every logged loss, the
validation bound, the final weights and the samples of each model type. When a change is meant to alter the
numbers (a fixed bug), re-record with ``python proofs_tests/golden/record.py --only NAME`` and say why in the
commit. The golden file holds float.hex strings and SHA-256 hashes, so the comparison is exact.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import record  # noqa: E402

WANT = json.loads(record.GOLDEN.read_text())["runs"]


@pytest.mark.parametrize("name", sorted(record.VARIANTS))
def test_golden_run_is_bitwise_identical(name: str, tmp_path: Path) -> None:
    got = record.run_one(name, str(tmp_path))
    want = WANT[name]
    for key in want:
        assert got[key] == want[key], f"{name}: {key} differs from the golden run"
