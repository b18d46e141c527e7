"""``oemdm bench --acceptance --smoke``: the GPU acceptance script, run at tiny sizes on CPU (interpreter).

Checks the JSON keys and the summary table (not speed: timings are never asserted), that a failing section
is recorded rather than fatal, and that a failing correctness gate stops the run with exit code 1.
"""

from __future__ import annotations

import json

import pytest

from oemdm_spec.cli import main as cli_main
from oemdm_spec.fast import bench

TIMING_KEYS = {"p10", "p50", "p90", "n"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = cli_main(["bench", "--acceptance", "--smoke", "--reps", "1", "--out", str(out)])
    return rc, json.loads((out / "acceptance.json").read_text()), buf.getvalue()


def test_acceptance_smoke_json_and_table(smoke_run) -> None:
    rc, res, stdout = smoke_run
    assert rc == 0, stdout[-3000:]
    assert res["smoke"] is True and res["gate_passed"] is True
    # written after every section (and every step row) while running; the last write marks it complete
    assert res["complete"] is True and not any(sec.get("partial") for sec in res["sections"].values())
    assert {"torch", "triton", "card", "driver", "cuda_runtime"} <= set(res["env"])
    s = res["sections"]
    assert set(s) == {"gate", "loss", "linear", "step"}
    assert all(ch["rel_err"] <= ch["tol"] for ch in s["gate"]["checks"].values())
    assert {"loss V", "grad V", "loss V padded", "grad V padded"} <= set(s["gate"]["checks"])
    assert any(k.startswith("fused in-place linear vs unfused") for k in s["gate"]["checks"])
    for label in ("V", "V padded"):
        rows = s["loss"][label]["rows"]
        for k in ("bytes floor (copy)", "eager fp32", "Triton default", "Triton best of sweep"):
            assert TIMING_KEYS <= set(rows[k]), (label, k, rows[k])
        assert rows["torch.compile"] == {"skipped": "skipped (no compile)"}
        assert len(s["loss"][label]["sweep"]) == 6  # BLOCK_V {2048, 4096, 8192} × num_warps {4, 8}
    assert s["loss"]["V padded"]["v_cols"] % 64 == 0
    lin = s["linear"]["rows"]
    assert TIMING_KEYS <= set(lin["three matmuls alone"]) and "x_matmuls" in lin["fused linear+loss (Triton, bias)"]
    step = s["step"]["rows"]
    for k in ("mdlm", "lomdm K=2", "ar"):
        assert TIMING_KEYS | {"tokens_per_s", "z_tokens_per_s"} <= set(step[k]), step[k]
    assert step["lomdm K=2"]["z_tokens_per_s"] == pytest.approx(2 * step["lomdm K=2"]["tokens_per_s"])
    # the summary table is printed last, one row per measurement, all ok
    table = stdout[stdout.index("## oemdm bench acceptance"):].splitlines()
    assert table[1] == "| section | item | p10 ms | p50 ms | p90 ms | figure | status |"
    body = [r for r in table[3:] if r.startswith("| ")]
    assert len(body) == len(bench.summary_rows(res)) and not any("FAILED" in r for r in body)
    assert table[-1].startswith("gate: passed")


def test_failures_are_recorded_not_fatal() -> None:
    def boom():
        raise RuntimeError("no kernel image for this card")

    assert bench._guard(boom) == {"error": "RuntimeError: no kernel image for this card"}
    res = {"smoke": True, "env": {"card": "x"}, "gate_passed": True, "wall_s": 1.0, "json": "a.json",
           "sections": {"loss": {"error": "OutOfMemoryError: boom"},
                        "step": {"rows": {"mdlm": {"error": "BackendCompilerFailed: x"}}}}}
    table = bench.format_table(res)
    assert "| loss | (section) |" in table and "FAILED: OutOfMemoryError: boom" in table
    assert "FAILED: BackendCompilerFailed: x" in table


def test_failing_gate_stops_the_run(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(bench, "GATE_TOL", {"loss": -1.0, "grad": -1.0, "linear": -1.0})
    rc = bench.main(["--smoke", "--reps", "1", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "acceptance.json").read_text())
    assert rc == 1 and res["gate_passed"] is False and set(res["sections"]) == {"gate"}
    assert "gate: FAILED" in capsys.readouterr().out


def test_percentiles() -> None:
    assert bench.percentiles([5.0, 1.0, 3.0, 2.0, 4.0]) == {"p10": 1.4, "p50": 3.0, "p90": 4.6, "n": 5}
    assert bench.percentiles([2.0]) == {"p10": 2.0, "p50": 2.0, "p90": 2.0, "n": 1}
