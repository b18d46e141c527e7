"""The Triton kernels compile for sm_90 (H100) and their default launch configurations do not spill.

Compiled ahead of time by ``benchmarks/ptxas_usage.py`` with the ``ptxas`` that ships in Triton's wheel, in a
subprocess (it needs TRITON_INTERPRET=0 before the kernels are defined; this process runs the interpreter).
This catches GPU-only compile errors and register spills without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def usage() -> list[dict]:
    triton = pytest.importorskip("triton")
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton wheel ships no ptxas")
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ptxas_usage.py"), "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_configurations_compile_without_spills(usage) -> None:
    defaults = [r for r in usage if r["what"].startswith("default") or r["what"] == "forward mask"]
    assert len(defaults) == 7
    for r in defaults:
        assert r["stack"] == 0, f"{r['what']} {r['cfg']} spills: {r['stack']} stack bytes, {r['regs']} registers"
        # ≤ 128 registers/thread keeps at least 2 warps-groups of 256 threads resident per SM.
        assert r["regs"] <= 128, f"{r['what']} {r['cfg']}: {r['regs']} registers/thread"
