"""`oemdm` CLI: a few-step train run prints the bound and writes its files; eval/sample/plot work on it; bad
input exits with code 2 and a clear message."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest

from oemdm_spec.cli import main


def small_args(tmp: Path, name: str) -> list[str]:
    data = tmp / "corpus.txt"
    words = ["the", "king", "shall", "speak", "of", "love", "and", "night", "to", "be", "or", "not", "my", "lord"]
    data.write_text(" ".join(words[(i * 7 + i // 3) % len(words)] for i in range(6000)))
    kw = dict(data=data, seq_len=16, n_layer=1, n_head=2, d_model=16, cond_dim=8, batch_size=4, steps=4,
              warmup=2, eval_every=2, eval_batches=1, final_eval_batches=2, eval_batch_size=16, ckpt_every=2,
              log_every=1, order_stats_every=2, sample_len=16, num_samples=2, name=name,
              out_dir=tmp / "runs", max_minutes=0)
    return [a for k, v in kw.items() for a in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The run every test here reads: trained in the fixture, so each test stands alone (xdist may send the
    tests of this module to different workers)."""
    tmp = tmp_path_factory.mktemp("cli")
    args = small_args(tmp, name="smoke")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", *args])
    return tmp, rc, buf.getvalue()


def test_train_smoke_prints_bound_and_writes_files(trained_run):
    tmp, rc, out = trained_run
    assert rc == 0, out[-2000:]
    m = re.search(r"NELBO <= ([0-9.]+) ± ([0-9.]+) bits/char\s+\(([0-9.]+) nats/char\);\s+perplexity <= ([0-9.]+)", out)
    assert m, out
    bits, se, nats, ppl = map(float, m.groups())
    assert math.isclose(bits, nats / math.log(2), rel_tol=1e-3)
    assert math.isclose(ppl, math.exp(nats), rel_tol=1e-3)
    assert 0.5 < bits < 10 and se > 0
    assert "estimator: log-time" in out and "sample (first-hitting" in out
    run = tmp / "runs" / "smoke"
    for f in ("config.json", "log.csv", "order_stats.csv", "summary.json", "training.png", "order_heatmap.png",
              "order_stats.png"):
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
        assert str(run / f) in out or f in ("config.json",)
    ck = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert {p.name for p in ck.iterdir()} == {"model.safetensors", "ema.safetensors", "optim.safetensors",
                                             "state.json"}
    # the rendered sample: a text line followed by a line of order deciles
    lines = out.split("sample (first-hitting")[1].splitlines()[1:3]
    assert re.fullmatch(r"  [0-9·]+", lines[1]) and len(lines[1]) == len(lines[0])


def test_eval_sample_plot_on_the_run(trained_run, capsys):
    tmp, rc, _ = trained_run
    assert rc == 0
    run = tmp / "runs" / "smoke"
    text = tmp / "zero_shot.txt"
    text.write_text("to be or not to be, that is the question " * 20)
    assert main(["eval", str(run), "--text", str(text), "--max-batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "NELBO <=" in out and "perplexity <=" in out and "zero_shot.txt" in out
    png = tmp / "s.png"
    assert main(["sample", str(run), "--num", "2", "--infill", "to be or __ to b", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.is_file() and "sample entropy" in out
    text, order = out.split("--- sample 0 ---")[1].splitlines()[1:3]
    assert text[2:11] == "to be or " and text[13:] == " to b"  # the fixed characters are kept
    assert order[2:11] == "·" * 9 and order[11] != "·" and order[12] != "·"  # only the blanks were generated
    assert main(["sample", str(run), "--num", "1", "--sampler", "grid", "--steps", "8",
                 "--out", str(tmp / "g.png")]) == 0
    assert main(["plot", str(run)]) == 0


@pytest.mark.parametrize("argv,needle", [
    (["train", "--stepz", "3"], "did you mean --steps"),
    (["train", "--c1", "0.5", "--c2", "0.6"], "c1 > c2"),
    (["eval", "/nonexistent/run"], "no checkpoint found"),
    (["sample", "/nonexistent/run", "--sampler", "nope"], "--sampler must be one of"),
    (["compare", "--models", "mdlm,gpt"], "unknown model type"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_help_is_useful(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "eval", "sample", "compare", "plot", "bench"):
        assert cmd in out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--c1" in out and "--steps" in out and "--resume" in out
    assert main([]) == 2


def test_module_entry_point_exists():
    assert (Path(__file__).resolve().parents[1] / "oemdm_spec" / "__main__.py").is_file()


def test_compare_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = small_args(tmp_path, name="x")
    assert main(["compare", "--models", "ar,lomdm-const", "--out", str(out), *args, "--steps", "2",
                 "--eval_every", "1", "--final_eval_batches", "1"]) == 0
    table = (out / "compare.md").read_text()
    assert "| ar |" in table and "| lomdm-const |" in table
    assert "Machine:" in table and (out / "compare.png").stat().st_size > 0
    rows = [r for r in table.splitlines() if r.startswith("| ar") or r.startswith("| lomdm-const")]
    assert len(rows) == 2 and all(len(r.split("|")) == 10 for r in rows)
    cfg = (out / "lomdm-const" / "config.json").read_text()
    assert '"c2": 0.0' in cfg and '"model": "lomdm"' in cfg
    # a second compare into the same folder: refused before any model trains (exit 2, nothing changed), unless
    # --overwrite, which replaces the model directories
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = ["compare", "--models", "ar,lomdm-const", "--out", str(out), *args, "--steps", "2",
             "--final_eval_batches", "1"]
    capsys.readouterr()
    assert main(again) == 2
    cap = capsys.readouterr()
    assert "already exists" in cap.err and "=== compare" not in cap.out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert main([*again, "--overwrite"]) == 0
    assert (out / "ar" / "log.csv").stat().st_mtime_ns > before[out / "ar" / "log.csv"]
