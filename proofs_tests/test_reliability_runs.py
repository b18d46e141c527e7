"""Run directories, resumes, evaluation of broken weights and resource limits (issue 15): one owner per run
directory, no reuse of an existing one, no bound from NaN, ranges for every size-like key, a full disk outside
a checkpoint, thread count kept on resume, plain progress off a terminal, no duplicated order-stats row,
``latest`` missing or garbage, no-op resumes, config.json edits, exit 2 instead of tracebacks, upper bounds,
one file mode and a sha256 per checkpoint file.

Most cases run in-process through ``oemdm_spec.cli.main`` on a 1-layer, 16-wide model (milliseconds to a
couple of seconds each); the ownership and full-disk cases use a real child (``proofs_tests/faults.py``).
Reproduce one: ``python -m pytest proofs_tests/test_reliability_runs.py -q -k <case>``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import shutil
import signal
import stat
import sys
from pathlib import Path

import pytest
import torch

from oemdm_spec.cli import main
from oemdm_spec.fast.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_reliability_faults import CHILD_TIMEOUT, log_rows, run, start, tiny_args, wait_for_rows  # noqa: E402


@pytest.fixture(autouse=True)
def _grad_mode():
    threads = torch.get_num_threads()
    yield
    torch.set_grad_enabled(True)  # cli.load_run turns autograd off process-wide
    torch.set_num_threads(threads)  # the trainer sets the thread count process-wide


def expect_exit_2(argv: list[str], capsys, *needles: str) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc} for {argv}: {err[-1500:]}"
    assert "oemdm: error:" in err and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("oemdm: error:")]) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


def train_args(tmp: Path, name: str, **kw: object) -> list[str]:
    base: dict[str, object] = dict(steps=4, ckpt_every=2, eval_every=0, model="lomdm")
    base.update(kw)
    return ["train", *tiny_args(tmp, name, **base)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-step LoMDM run (checkpoints at 2 and 4) trained through the CLI."""
    tmp = tmp_path_factory.mktemp("finished")
    assert main([str(a) for a in train_args(tmp, "done")]) == 0
    torch.set_grad_enabled(True)
    return tmp / "runs" / "done"


def copy_run(src: Path, tmp: Path, name: str = "run") -> Path:
    dst = tmp / "runs" / name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and p.name != ".lock" and not p.name.endswith(".png")}


# ----------------------------------------------------------------------------------------------------------
# 1. one owner per run directory


def test_a_run_directory_has_one_owner(tmp_path, capsys):
    """While a run trains, a second `train --name` of it and a `--resume` of it exit 2 naming the holder's pid,
    and the first run finishes untouched. After the owner dies (SIGKILL), its stale lock is taken over."""
    argv = train_args(tmp_path, "busy", steps=400, ckpt_every=1, log_every=1)
    p = start(argv, OEMDM_FAULT_STEP_SLEEP="0.05")
    run_dir = tmp_path / "runs" / "busy"
    try:
        assert wait_for_rows(p, run_dir, 2), p.communicate()[1][-2000:]
        expect_exit_2(train_args(tmp_path, "busy"), capsys, f"pid {p.pid}", "in use")
        expect_exit_2(["train", "--resume", run_dir], capsys, f"pid {p.pid}", "in use")
        expect_exit_2(train_args(tmp_path, "busy") + ["--overwrite"], capsys, f"pid {p.pid}")
        assert p.poll() is None, "the owner died"
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=CHILD_TIMEOUT)
    from oemdm_spec.fast.runlock import RunLock

    lock = RunLock(run_dir)  # flock was released by the kernel when the owner died: no stale lock
    assert (run_dir / ".lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_default_names_never_collide(tmp_path):
    """Two runs started in the same second get two directories (an exclusive mkdir with a -2 suffix)."""
    from oemdm_spec.fast.runlock import claim_run_dir

    planned = tmp_path / "runs" / "20260101-000000-lomdm"
    a, la = claim_run_dir(planned, overwrite=False, unique=True)
    b, lb = claim_run_dir(planned, overwrite=False, unique=True)
    assert a == planned and b == planned.with_name(planned.name + "-2")
    la.release()
    lb.release()


def test_same_name_at_once_claims_once(tmp_path):
    from oemdm_spec.fast.config import ConfigError
    from oemdm_spec.fast.runlock import claim_run_dir

    d = tmp_path / "runs" / "same"
    _, lock = claim_run_dir(d, overwrite=False, unique=False)
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        claim_run_dir(d, overwrite=False, unique=False)
    lock.release()


# ----------------------------------------------------------------------------------------------------------
# 2. an existing run directory is never reused by a fresh run


def test_existing_name_is_refused_then_overwritten_on_request(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path, "r")
    before = snapshot(run_dir)
    err = expect_exit_2(train_args(tmp_path, "r", model="mdlm"), capsys, "already exists", "--resume",
                        "--overwrite", "--name")
    assert str(run_dir) in err
    assert snapshot(run_dir) == before, "the refused run changed the existing one"
    assert main([str(a) for a in train_args(tmp_path, "r", model="mdlm")] + ["--overwrite"]) == 0
    capsys.readouterr()
    ck = load_checkpoint(run_dir)
    assert ck["config"]["model"] == "mdlm" and ck["step"] == 4
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_")) == [
        "step_0000002", "step_0000004"]
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".r.")], "the old contents stayed"


# ----------------------------------------------------------------------------------------------------------
# 3. batches with no masked position; extreme constants


def test_batch_of_one_tiny_seq_len_and_extreme_constants_train(tmp_path, capsys):
    # seq_len 2, batch 1, t_min close to 0: many steps have no masked position at all
    assert main([str(a) for a in train_args(tmp_path, "b1", seq_len=2, batch_size=1, eval_batch_size=1, steps=12,
                                            sample_len=2, t_min=1e-6, c1=100, c2=99.9)]) == 0, capsys.readouterr().err
    rows = log_rows(tmp_path / "runs" / "b1")
    assert len(rows) == 12 and all(math.isfinite(float(loss)) for _, loss in rows)


CONSTANTS = [({"c1": 1e300}, "c1"), ({"c2": -1e300}, "c2"),
             ({"log_range": 1e3, "order_param": "logspace"}, "log_range"), ({"lr": 1e6}, "lr"),
             ({"head_lr": 50}, "head_lr"), ({"weight_decay": 1e9}, "weight_decay"), ({"t_min": 1.5}, "t_min"),
             ({"eps": 0.7, "model": "oemdm-arm"}, "eps"), ({"grad_clip": "inf"}, "grad_clip")]


@pytest.mark.parametrize("kw,needle", CONSTANTS, ids=[",".join(map(str, k.items())) for k, _ in CONSTANTS])
def test_constants_out_of_range_are_refused(tmp_path, capsys, kw, needle):
    expect_exit_2(train_args(tmp_path, "c", **kw), capsys, needle)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------------------------
# 4. non-finite weights never report a bound


def _nan_ema(run_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    ck = resolve_checkpoint(run_dir)
    t = load_file(str(ck / "ema.safetensors"))
    t = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in t.items()}
    save_file(t, str(ck / "ema.safetensors"))
    state = json.loads((ck / "state.json").read_text())
    state.pop("sha256", None)  # a deliberate edit, not corruption
    (ck / "state.json").write_text(json.dumps(state))


def test_eval_refuses_nan_weights(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    _nan_ema(run_dir)
    expect_exit_2(["eval", run_dir, "--max-batches", "1"], capsys, "non-finite weights")


def test_evaluate_bound_refuses_nan_weights_and_nan_bounds(finished):
    from oemdm_spec.fast.checkpoint import load_run
    from oemdm_spec.fast.evaluate import EvalResult, NonFiniteBound, evaluate_bound

    model, cfg, tok, _ = load_run(finished)
    x = torch.randint(0, tok.vocab_size, (2, cfg.seq_len))
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    with pytest.raises(NonFiniteBound, match="non-finite weights"):
        evaluate_bound(model, [x])
    assert EvalResult(1e6, 1.0, 2, 32, "mc").perplexity == math.inf  # no OverflowError
    assert "inf" in EvalResult(1e6, 1.0, 2, 32, "mc").describe()


def test_trainer_final_eval_refuses_nan_ema(tmp_path, capsys, monkeypatch):
    import oemdm_spec.fast.trainer as tr

    def nan_ema(ema, model, decay, step):
        for p in ema.parameters():
            p.data.fill_(math.nan)

    monkeypatch.setattr(tr, "ema_update", nan_ema)
    expect_exit_2(train_args(tmp_path, "nan"), capsys, "non-finite weights", "step_0000004")
    run_dir = tmp_path / "runs" / "nan"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "val_nelbo" not in summary and "non-finite" in summary["eval_error"]
    with open(run_dir / "log.csv", newline="") as f:
        assert not [r for r in csv.DictReader(f) if r["val_nelbo"]], "a bound was logged from NaN weights"


# ----------------------------------------------------------------------------------------------------------
# 6. a full disk outside a checkpoint write


def test_log_write_failure_saves_a_checkpoint_and_exits_2(tmp_path, capsys, monkeypatch):
    import errno

    from oemdm_spec.fast.logger import Logger

    real = Logger.log
    calls = {"n": 0}

    def log(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.log_path))
        real(self, row)

    monkeypatch.setattr(Logger, "log", log)
    expect_exit_2(train_args(tmp_path, "full", steps=10, ckpt_every=0), capsys, "log.csv", "No space left",
                  "step_0000003", "--resume")
    assert load_checkpoint(tmp_path / "runs" / "full")["step"] == 3


def test_resume_on_a_full_disk_leaves_no_temporary(tmp_path, finished):
    """The resumed run must rewrite log.csv (rows after the checkpoint); RLIMIT_FSIZE makes that fail."""
    run_dir = copy_run(finished, tmp_path)
    ck2 = run_dir / "checkpoints" / "step_0000002"
    (run_dir / "checkpoints" / "latest").write_text(ck2.name + "\n")  # as if killed before step 4's checkpoint
    with open(run_dir / "log.csv", "a") as f:  # rows to keep (larger than config.json), then rows to drop
        f.write("".join("2,1,1,0.001,1,1,1,,\n" for _ in range(400)))
        f.write("".join(f"{s},1,1,0.001,1,1,1,,\n" for s in range(5, 9)))
    before = (run_dir / "log.csv").read_bytes()
    limit = (run_dir / "config.json").stat().st_size + 200

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = run(["train", "--resume", str(run_dir), "--steps", "8"], preexec=cap)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "oemdm: error:" in res.stderr and "log.csv" in res.stderr, res.stderr[-2000:]
    assert not (run_dir / "log.csv.tmp").exists()
    assert (run_dir / "log.csv").read_bytes() == before


# ----------------------------------------------------------------------------------------------------------
# 7 / 14. ranges of every size-like key; exit 2 instead of tracebacks


SIZES = [({"eval_batches": 0, "eval_every": 2}, "eval_batches"), ({"eval_batches": -1}, "eval_batches"),
         ({"warmup": -1}, "warmup"), ({"seed": 2**64}, "seed"), ({"seed": -1}, "seed"), ({"cond_dim": -4}, "cond_dim"),
         ({"sample_len": 10**6}, "sample_len"), ({"num_samples": 10**6}, "num_samples"), ({"threads": -1}, "threads"),
         ({"ckpt_every": -1}, "ckpt_every"), ({"eval_every": -5}, "eval_every"), ({"stop_at": -1}, "stop_at"),
         ({"order_stats_every": -1}, "order_stats_every"), ({"max_minutes": -1}, "max_minutes"),
         ({"seq_len": 10**7}, "seq_len"), ({"batch_size": 10**9}, "batch_size"), ({"K": 10**6}, "K")]


@pytest.mark.parametrize("kw,needle", SIZES, ids=[",".join(map(str, k.items())) for k, _ in SIZES])
def test_size_like_keys_have_ranges(tmp_path, capsys, kw, needle):
    expect_exit_2(train_args(tmp_path, "s", **kw), capsys, needle, str(list(kw.values())[0]))
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(tmp_path, capsys):
    expect_exit_2(train_args(tmp_path, "g", device="cuda"), capsys, "cuda")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key,value", [("steps", "ten"), ("lr", "fast"), ("time_conditioning", 1), ("seq_len", 16.5)])
def test_wrong_types_in_a_checkpoint_config(tmp_path, capsys, finished, key, value):
    run_dir = copy_run(finished, tmp_path)
    ck = resolve_checkpoint(run_dir)
    state = json.loads((ck / "state.json").read_text())
    state["config"][key] = value
    (ck / "state.json").write_text(json.dumps(state))
    expect_exit_2(["eval", run_dir, "--max-batches", "1"], capsys, key)
    expect_exit_2(["train", "--resume", run_dir, "--steps", "8"], capsys, key)


def test_eval_after_the_data_file_is_gone(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    ck = resolve_checkpoint(run_dir)
    state = json.loads((ck / "state.json").read_text())
    state["config"]["data"] = str(tmp_path / "gone.txt")
    (ck / "state.json").write_text(json.dumps(state))
    expect_exit_2(["eval", run_dir, "--max-batches", "1"], capsys, "gone.txt", "--text")


def test_sample_out_and_read_only_runs(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    expect_exit_2(["sample", run_dir, "--num", "1", "--out", tmp_path / "nodir" / "x.png"], capsys, "nodir")
    expect_exit_2(["sample", run_dir, "--num", "1", "--out", tmp_path / "x.jpg"], capsys, ".png", "x.jpg")
    # an unwritable default output (a directory in its place: root ignores permission bits)
    (run_dir / "samples_order.png").mkdir()
    expect_exit_2(["sample", run_dir, "--num", "1"], capsys, "samples_order.png")
    (run_dir / "training.png").unlink(missing_ok=True)
    (run_dir / "training.png").mkdir()
    expect_exit_2(["plot", run_dir], capsys, "cannot write")


def test_plot_of_a_non_numeric_log_cell(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    text = (run_dir / "log.csv").read_text().splitlines()
    cells = text[2].split(",")
    cells[1] = "oops"
    text[2] = ",".join(cells)
    (run_dir / "log.csv").write_text("\n".join(text) + "\n")
    expect_exit_2(["plot", run_dir], capsys, "log.csv", "line 3", "oops")


# ----------------------------------------------------------------------------------------------------------
# 8. the thread count is kept on resume


def test_resume_keeps_the_checkpoint_thread_count(tmp_path, capsys):
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    args = tiny_args(tmp_path, "th", steps=6, stop_at=2, threads=0, ckpt_every=0)
    train(build_config(parse_overrides(args)), progress=False, final_eval=False)
    run_dir = tmp_path / "runs" / "th"
    recorded = load_checkpoint(run_dir)["threads"]
    assert isinstance(recorded, int) and recorded >= 1
    torch.set_num_threads(recorded + 2)
    res = train(resume=str(run_dir), overrides={"stop_at": 4}, progress=False, final_eval=False)
    assert res.config.threads == recorded and torch.get_num_threads() == recorded
    capsys.readouterr()
    train(resume=str(run_dir), overrides={"stop_at": 0, "threads": recorded + 1}, progress=False, final_eval=False)
    assert "--threads" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# 9. plain progress lines off a terminal


def test_no_carriage_returns_when_not_on_a_terminal(tmp_path, capsys):
    assert main([str(a) for a in train_args(tmp_path, "p", steps=40, ckpt_every=0)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err, "tqdm wrote carriage-return updates into a captured log"
    lines = [ln for ln in err.splitlines() if ln.startswith("[oemdm] step ")]
    assert 1 <= len(lines) <= 25 and lines[-1].startswith("[oemdm] step 40/40"), err[-2000:]


# ----------------------------------------------------------------------------------------------------------
# 10 / 11 / 12 / 13. resumes


def test_order_stats_has_no_duplicated_row_after_kill_and_resume(tmp_path):
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    args = tiny_args(tmp_path, "os", steps=12, stop_at=8, ckpt_every=5, order_stats_every=1)
    train(build_config(parse_overrides(args)), progress=False, final_eval=False)
    run_dir = tmp_path / "runs" / "os"
    # as if SIGKILLed after step 8 but before its checkpoint: only step 5 was saved
    shutil.rmtree(run_dir / "checkpoints" / "step_0000008")
    (run_dir / "checkpoints" / "latest").write_text("step_0000005\n")
    train(resume=str(run_dir), overrides={"stop_at": 0}, progress=False, final_eval=False)
    with open(run_dir / "order_stats.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(12)), steps


@pytest.mark.parametrize("latest", ["missing", "directory", "garbage", "binary"])
def test_latest_missing_or_bad_falls_back_to_the_newest_step(tmp_path, capsys, finished, latest):
    run_dir = copy_run(finished, tmp_path)
    path = run_dir / "checkpoints" / "latest"
    path.unlink()
    if latest == "directory":
        path.mkdir()
    elif latest == "garbage":
        path.write_text("../../etc\n")
    elif latest == "binary":
        path.write_bytes(b"\xff\xfe\x00step")
    assert resolve_checkpoint(run_dir).name == "step_0000004"
    assert main(["eval", str(run_dir), "--max-batches", "1"]) == 0
    assert main(["train", "--resume", str(run_dir), "--steps", "6"]) == 0
    assert load_checkpoint(run_dir)["step"] == 6


def test_latest_bad_and_no_step_directory_fails_clearly(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    for d in (run_dir / "checkpoints").glob("step_*"):
        shutil.rmtree(d)
    (run_dir / "checkpoints" / "latest").unlink()
    (run_dir / "checkpoints" / "latest").mkdir()
    expect_exit_2(["eval", run_dir], capsys, "no checkpoint found")
    expect_exit_2(["train", "--resume", run_dir], capsys, "no checkpoint found")


def test_resume_with_nothing_to_do_writes_nothing(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "nothing to do" in err and "--steps" in err
    assert snapshot(run_dir) == before, "a no-op resume changed the run"


def test_resume_of_a_stop_at_run_says_so(tmp_path, capsys):
    assert main([str(a) for a in train_args(tmp_path, "st", steps=6, stop_at=2)]) == 0
    run_dir = tmp_path / "runs" / "st"
    capsys.readouterr()
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "nothing to do" in err and "--stop_at" in err
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("key", ["out_dir", "name"])
def test_resume_refuses_out_dir_and_name(tmp_path, capsys, finished, key):
    run_dir = copy_run(finished, tmp_path)
    expect_exit_2(["train", "--resume", run_dir, f"--{key}", "elsewhere", "--steps", "6"], capsys, f"--{key}",
                  "--resume")
    assert not (tmp_path / "elsewhere").exists()


def test_resume_warns_when_config_json_was_edited(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["lr"] = 0.5
    (run_dir / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(run_dir), "--steps", "6"]) == 0
    err = capsys.readouterr().err
    assert "config.json differs" in err and "lr" in err
    assert json.loads((run_dir / "config.json").read_text())["lr"] == load_checkpoint(run_dir)["config"]["lr"]


# ----------------------------------------------------------------------------------------------------------
# 15. upper bounds


def test_data_that_is_not_a_regular_file(tmp_path, capsys):
    expect_exit_2(train_args(tmp_path, "z", data="/dev/zero"), capsys, "/dev/zero", "regular file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    expect_exit_2(train_args(tmp_path, "z", data=fifo), capsys, "fifo", "regular file")
    assert not (tmp_path / "runs").exists()


LIMITS = [(["sample", "{run}", "--num", str(10**7)], "--num"), (["sample", "{run}", "--length", "100000"], "--length"),
          (["sample", "{run}", "--sampler", "grid", "--steps", str(10**12)], "--steps"),
          (["eval", "{run}", "--repeats", "100000"], "--repeats")]


@pytest.mark.parametrize("argv,needle", LIMITS, ids=[a[2] for a, _ in LIMITS])
def test_sample_and_eval_limits(capsys, finished, argv, needle):
    expect_exit_2([a.format(run=finished) for a in argv], capsys, needle)


def test_sample_is_drawn_in_chunks(tmp_path, capsys, finished, monkeypatch):
    sm = sys.modules["oemdm_spec.fast.sample"]
    sizes = []
    real = sm.sample

    def spy(model, num, **kw):
        sizes.append(num)
        return real(model, num, **kw)

    monkeypatch.setattr(sm, "sample", spy)
    run_dir = copy_run(finished, tmp_path)
    assert main(["sample", str(run_dir), "--num", "70", "--length", "4"]) == 0
    out = capsys.readouterr().out
    assert sizes == [64, 6] and "--- sample 69 ---" in out


# ----------------------------------------------------------------------------------------------------------
# 16 / 17. file modes, checksums, duplicated keys


def test_checkpoint_files_share_one_mode(finished):
    ck = resolve_checkpoint(finished)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ck.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_flipped_payload_byte_is_caught_by_the_checksum(tmp_path, capsys, finished):
    run_dir = copy_run(finished, tmp_path)
    ck = resolve_checkpoint(run_dir)
    path = ck / "optim.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # a payload byte: safetensors itself would load it silently
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="optim.safetensors.*sha256"):
        load_checkpoint(run_dir)
    expect_exit_2(["train", "--resume", run_dir, "--steps", "6"], capsys, "optim.safetensors", "sha256")


def test_a_key_given_twice_warns(capsys):
    from oemdm_spec.fast.config import parse_overrides

    assert parse_overrides(["--steps", "2", "--steps=3"]) == {"steps": 3}
    err = capsys.readouterr().err
    assert "--steps given twice" in err and "3" in err
