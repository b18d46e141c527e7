"""Faults: SIGKILL at random moments (also inside a checkpoint write) + --resume replays bitwise; SIGTERM/SIGINT;
a full disk / unwritable output; non-finite losses; corrupted or mismatched checkpoints.

Every training here is a real ``oemdm train`` child process (through ``proofs_tests/faults.py``, which adds
the fault hooks) on a 1-layer, 16-wide model: a run of 40 steps takes about 3 s, most of it start-up.
Reproduce: ``python -m pytest proofs_tests/test_reliability_faults.py -q``; docs/reliability.md has the
manual commands.
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oemdm_spec.fast.checkpoint import load_checkpoint, resolve_checkpoint

FAULTS = Path(__file__).with_name("faults.py")
WORDS = ["the", "king", "shall", "speak", "of", "love", "and", "night", "to", "be", "or", "not", "my", "lord"]
STEPS = 40
CKPT_EVERY = 5
CHILD_TIMEOUT = 120  # seconds; a hung child is a failure, never a silent wait


def corpus(path: Path) -> Path:
    if not path.exists():
        rng = random.Random(0)
        path.write_text(" ".join(rng.choice(WORDS) for _ in range(3000)))
    return path


def tiny_args(tmp: Path, name: str, **kw: object) -> list[str]:
    """A run of STEPS steps that takes seconds: 1 layer, width 16, batch 4 × 16 tokens, one thread."""
    base: dict[str, object] = dict(
        model="lomdm", data=corpus(tmp / "corpus.txt"), seq_len=16, n_layer=1, n_head=2, d_model=16,
        cond_dim=8, batch_size=4, steps=STEPS, warmup=2, eval_every=0, ckpt_every=CKPT_EVERY, log_every=1,
        order_stats_every=0, final_eval_batches=1, eval_batch_size=8, sample_len=16, num_samples=1,
        name=name, out_dir=tmp / "runs", max_minutes=0, threads=1, seed=0,
    )
    base.update(kw)
    return [a for k, v in base.items() for a in (f"--{k}", str(v))]


def child_env(**faults: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the trainer's CPU path uses the PyTorch kernels anyway
    env["OEMDM_KERNEL_BACKEND"] = "torch"
    env["PYTHONUNBUFFERED"] = "1"
    for k in [k for k in env if k.startswith("OEMDM_FAULT_")]:
        del env[k]
    env.update(faults)
    return env


def start(argv: list[str], preexec=None, **faults: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FAULTS), *argv], env=child_env(**faults),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def run(argv: list[str], preexec=None, **faults: str) -> subprocess.CompletedProcess:
    p = start(argv, preexec, **faults)
    out, err = p.communicate(timeout=CHILD_TIMEOUT)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def log_rows(run_dir: Path) -> list[tuple[int, str]]:
    """(step, loss) of every training row of log.csv, in file order (eval-only rows have no loss)."""
    path = run_dir / "log.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f) if r.get("loss")]


def wait_for_rows(p: subprocess.Popen, run_dir: Path, n: int, timeout: float = 60.0) -> bool:
    """Poll log.csv until it holds n training rows (True) or the child has exited (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(log_rows(run_dir)) >= n:
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.002)
    p.kill()
    raise AssertionError(f"log.csv of {run_dir} did not reach {n} rows in {timeout} s")


def checkpoint_steps(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    return sorted(int(p.name.split("_")[1]) for p in root.glob("step_*")) if root.exists() else []


def assert_checkpoints_readable(run_dir: Path) -> int | None:
    """Every step_* directory loads completely and `latest` names one of them; returns latest's step."""
    root = run_dir / "checkpoints"
    if not root.exists():
        return None
    for d in root.glob("step_*"):
        ck = load_checkpoint(d)  # raises on a missing, truncated or garbled file
        assert ck["step"] == int(d.name.split("_")[1]), d
        assert {"model.safetensors", "ema.safetensors", "optim.safetensors", "state.json"} <= {
            p.name for p in d.iterdir()}, d
    if not (root / "latest").exists() and not list(root.glob("step_*")):
        return None
    # (step directories but no `latest`: a kill between the first step directory and `latest`; the newest
    # complete step directory is found all the same)
    latest = resolve_checkpoint(run_dir)
    assert latest.is_dir(), f"`latest` names {latest.name}, which does not exist"
    return int(load_checkpoint(latest)["step"])


def tensors_equal(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    for name in ("model.safetensors", "ema.safetensors", "optim.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys(), name
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name


@pytest.fixture(autouse=True)
def _grad_mode():
    # cli.load_run turns autograd off process-wide; keep that from leaking into other tests of this worker
    yield
    torch.set_grad_enabled(True)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """The uninterrupted run: its loss for every step, and its final checkpoint."""
    tmp = tmp_path_factory.mktemp("ref")
    res = run(["train", *tiny_args(tmp, "full")])
    assert res.returncode == 0, res.stderr[-3000:]
    rows = log_rows(tmp / "runs" / "full")
    assert [s for s, _ in rows] == list(range(1, STEPS + 1))
    return tmp / "runs" / "full", dict(rows)


# ----------------------------------------------------------------------------------------------------------
# SIGKILL + resume


def test_sigkill_at_random_moments_and_inside_checkpoint_writes_then_resume_is_bitwise(tmp_path, reference_run):
    """One run is killed again and again — from outside at seeded random log rows, and from inside each
    phase of a checkpoint write — and resumed each time. Afterwards every loss ever logged for step s (in
    any segment) equals the uninterrupted run's loss for s exactly, and the final weights, EMA and optimiser
    state are bitwise equal. After every kill, every checkpoint on disk loads."""
    ref_dir, ref = reference_run
    rng = random.Random(20260211)
    run_dir = tmp_path / "runs" / "killed"
    # (kind, parameter): 'ext' = parent's SIGKILL after that many new log rows; else a kill inside the
    # N-th checkpoint write of that process at the named point
    where = ["model-half", "optim", "before-rename", "before-latest"]
    rng.shuffle(where)
    plan: list[tuple[str, int]] = [("ext", rng.randint(7, 12))]
    plan += [(w, rng.randint(1, 2)) for w in where]
    plan.insert(rng.randint(2, len(plan)), ("ext", rng.randint(2, 6)))
    kills = 0
    seen: list[tuple[int, str]] = []  # every row of every segment, read before the next segment rewrites the log
    for i, (kind, param) in enumerate(plan):
        argv = ["train", *tiny_args(tmp_path, "killed")] if i == 0 else ["train", "--resume", str(run_dir)]
        if i > 0 and checkpoint_steps(run_dir) == [] and not (run_dir / "checkpoints" / "latest").exists():
            # killed before the first checkpoint: start afresh (a fresh run replaces a directory only when told)
            argv = ["train", *tiny_args(tmp_path, "killed"), "--overwrite"]
        before = len(log_rows(run_dir))
        if kind == "ext":
            p = start(argv, OEMDM_FAULT_STEP_SLEEP="0.02")
            reached = wait_for_rows(p, run_dir, before + param)
            if reached:
                p.send_signal(signal.SIGKILL)
            p.communicate(timeout=CHILD_TIMEOUT)
        else:
            p = start(argv, OEMDM_FAULT_KILL_IN_SAVE=f"{param}:{kind}")
            p.communicate(timeout=CHILD_TIMEOUT)
        if p.returncode == -signal.SIGKILL:
            kills += 1
        assert p.returncode in (0, -signal.SIGKILL), (plan[i], p.returncode)
        assert_checkpoints_readable(run_dir)
        seen += log_rows(run_dir)
    assert kills >= 4, f"only {kills} of {len(plan)} planned kills landed: the test did not test much"
    res = run(["train", "--resume", str(run_dir)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert assert_checkpoints_readable(run_dir) == STEPS
    rows = log_rows(run_dir)
    # a resume drops the killed segment's rows after its checkpoint, so every step is logged once, in order
    assert [s for s, _ in rows] == list(range(1, STEPS + 1))
    seen += rows
    mismatched = [(s, loss, ref[s]) for s, loss in seen if loss != ref[s]]
    assert not mismatched, f"resumed losses differ from the uninterrupted run: {mismatched[:5]}"
    tensors_equal(resolve_checkpoint(ref_dir), resolve_checkpoint(run_dir))
    # the temporaries of the writes killed mid-save were cleaned up by the next save
    leftovers = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith((".tmp", ".old")))
    assert not leftovers, leftovers


def test_kill_while_resaving_the_latest_step_keeps_it_readable(tmp_path, reference_run):
    """Resuming from an earlier step directory of a finished run writes its final checkpoint again, at the
    same step. A SIGKILL between the removal of the old step directory and the rename of the new one must not
    leave `latest` dangling. (A plain resume of a finished run is a no-op that writes nothing.)"""
    ref_dir, _ = reference_run
    run_dir = tmp_path / "runs" / "full"
    shutil.copytree(ref_dir, run_dir)
    earlier = run_dir / "checkpoints" / f"step_{STEPS - CKPT_EVERY:07d}"
    p = start(["train", "--resume", str(earlier)], OEMDM_FAULT_KILL_IN_SAVE="1:before-rename")
    p.communicate(timeout=CHILD_TIMEOUT)
    assert p.returncode == -signal.SIGKILL
    # the old step_40 was moved aside, not deleted; `latest` falls back to the newest complete step
    assert assert_checkpoints_readable(run_dir) in (STEPS - CKPT_EVERY, STEPS)
    res = run(["train", "--resume", str(run_dir)])
    assert res.returncode == 0, res.stderr[-2000:]
    assert assert_checkpoints_readable(run_dir) == STEPS
    tensors_equal(resolve_checkpoint(ref_dir), resolve_checkpoint(run_dir))


# ----------------------------------------------------------------------------------------------------------
# SIGTERM / SIGINT


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_sigint_save_a_final_checkpoint(tmp_path, reference_run, sig):
    _, ref = reference_run
    run_dir = tmp_path / "runs" / "sig"
    # no periodic checkpoint before the signal: any checkpoint found afterwards was written by the handler
    p = start(["train", *tiny_args(tmp_path, "sig", ckpt_every=1000)], OEMDM_FAULT_STEP_SLEEP="0.02")
    assert wait_for_rows(p, run_dir, 8), "the run ended before the signal"
    p.send_signal(sig)
    _, err = p.communicate(timeout=CHILD_TIMEOUT)
    done = log_rows(run_dir)[-1][0]
    assert "Traceback" not in err, err[-2000:]
    step = assert_checkpoints_readable(run_dir)
    assert step is not None and done <= step < STEPS, (step, done)
    res = run(["train", "--resume", str(run_dir)])
    assert res.returncode == 0, res.stderr[-2000:]
    assert all(loss == ref[s] for s, loss in log_rows(run_dir))


# ----------------------------------------------------------------------------------------------------------
# full disk, unwritable output directory


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory):
    """A run checkpointed at step 10, then resumed with RLIMIT_FSIZE below the size of one weight file:
    the next checkpoint write fails with EFBIG, like a full disk (root ignores read-only directories)."""
    tmp = tmp_path_factory.mktemp("diskfull")
    run_dir = tmp / "runs" / "df"
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    # the first part in-process (saves a child start-up); bitwise equality is not at stake here
    train(build_config(parse_overrides(tiny_args(tmp, "df", stop_at=10, ckpt_every=1000))), progress=False,
          final_eval=False)
    ck = resolve_checkpoint(run_dir)
    snapshot = {p.name: p.read_bytes() for p in ck.iterdir()}
    limit = min(len(b) for n, b in snapshot.items() if n.endswith(".safetensors")) - 1
    # the limit must stop the weights, not the small files written first (state.json, log rows, config)
    assert len(snapshot["state.json"]) < limit // 2 and (run_dir / "log.csv").stat().st_size < limit // 2

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = run(["train", "--resume", str(run_dir), "--stop_at", "0"], preexec=cap)
    return run_dir, ck, snapshot, res


def test_disk_full_keeps_the_previous_checkpoint(disk_full):
    run_dir, ck, snapshot, res = disk_full
    assert res.returncode != 0, "the write could not succeed, yet the run reported success"
    assert resolve_checkpoint(run_dir) == ck  # `latest` still names the last good checkpoint
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == snapshot
    assert assert_checkpoints_readable(run_dir) == 10


def test_disk_full_fails_with_a_clear_message(disk_full):
    run_dir, ck, _, res = disk_full
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "oemdm: error:" in res.stderr and "checkpoint" in res.stderr and ck.name in res.stderr


def test_output_directory_under_a_regular_file(tmp_path, capsys):
    from oemdm_spec.cli import main

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a regular file")
    argv = ["train", *tiny_args(tmp_path, "x", out_dir=blocker / "runs", steps=2)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "oemdm: error:" in err and str(blocker) in err
    assert blocker.read_text() == "a regular file"


# ----------------------------------------------------------------------------------------------------------
# non-finite loss


def test_nan_steps_stop_with_step_group_and_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "runs" / "nan"
    res = run(["train", *tiny_args(tmp_path, "nan", steps=60)], OEMDM_FAULT_NAN_STEPS="12-59")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    msg = (res.stdout + res.stderr).lower()
    assert "non-finite" in msg or "nan" in msg
    assert "step 13" in msg or "step 12" in msg  # the first bad step (1-based or 0-based)
    assert "step_0000010" in msg  # the last good checkpoint
    assert any(g in msg for g in ("group", "decay", "head"))  # the parameter group
    ck = load_checkpoint(run_dir)
    assert all(bool(torch.isfinite(v).all()) for v in ck["model"].values())


def test_one_nan_step_is_skipped_and_counted(tmp_path):
    run_dir = tmp_path / "runs" / "nan1"
    res = run(["train", *tiny_args(tmp_path, "nan1", steps=20, ckpt_every=1000)], OEMDM_FAULT_NAN_STEPS="12")
    assert res.returncode == 0, res.stderr[-2000:]
    ck = load_checkpoint(run_dir)
    for part in ("model", "ema"):
        assert all(bool(torch.isfinite(v).all()) for v in ck[part].values()), part
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any("skip" in k and v == 1 for k, v in summary.items()), summary


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_nan_in_one_group_names_that_group_only(tmp_path, monkeypatch, grad_clip):
    """A NaN gradient in the scheduler heads alone: the message must name the `heads` group and not the
    backbone groups. (Clipping with a NaN norm would multiply *every* gradient by NaN; the groups must be
    read before that.)"""
    import oemdm_spec.fast.trainer as tr
    from oemdm_spec.fast.config import build_config, parse_overrides

    real = tr.LossModule

    class NaNHeads(real):  # type: ignore[misc, valid-type]
        def forward(self, *args, **kw):
            out = super().forward(*args, **kw)
            p = self.model.phi.head.weight
            p.register_hook(lambda g: g * float("nan"))  # NaN reaches the head's gradient only
            return out

    monkeypatch.setattr(tr, "LossModule", NaNHeads)
    cfg = build_config(parse_overrides(tiny_args(tmp_path, "nanhead", steps=4, max_bad_steps=0,
                                                 grad_clip=grad_clip)))
    with pytest.raises(tr.TrainingDiverged) as e:
        tr.train(cfg, progress=False, final_eval=False)
    msg = str(e.value)
    assert "step 1" in msg and "heads" in msg, msg
    assert "decay" not in msg, msg  # neither `decay` nor `no_decay`


# ----------------------------------------------------------------------------------------------------------
# corrupted / mismatched checkpoints


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    tmp = tmp_path_factory.mktemp("good")
    overrides = parse_overrides(tiny_args(tmp, "good", steps=10, model="mdlm"))
    train(build_config(overrides), progress=False, final_eval=False)
    return tmp / "runs" / "good"


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garble_json(p: Path) -> None:
    p.write_text('{"step": 10, "config": {')


def _unlink(p: Path) -> None:
    p.unlink()


def _mismatch(p: Path) -> None:
    state = json.loads(p.read_text())
    state["config"]["d_model"] = 32  # the tensors were saved for width 16
    p.write_text(json.dumps(state))


def _wrong_vocab(p: Path) -> None:
    from safetensors.torch import load_file, save_file

    t = load_file(str(p))
    key = next(k for k, v in t.items() if v.dim() == 2 and v.shape[0] > 40)  # an embedding / output matrix
    t[key] = torch.zeros(t[key].shape[0] + 7, *t[key].shape[1:])
    save_file(t, str(p))


CORRUPTIONS = [
    ("model.safetensors", _truncate, "truncated weights"),
    ("optim.safetensors", _truncate, "truncated optimiser state"),
    ("state.json", _garble_json, "truncated state.json"),
    ("ema.safetensors", _unlink, "missing EMA file"),
    ("state.json", _mismatch, "config/weights mismatch"),
    ("ema.safetensors", _wrong_vocab, "wrong vocabulary size"),  # the EMA: eval reads it, resume too
]


@pytest.mark.parametrize("command", ["eval", "resume"])
@pytest.mark.parametrize("fname,corrupt,what", CORRUPTIONS, ids=[c[2] for c in CORRUPTIONS])
def test_corrupted_checkpoint_gives_a_clear_error(tmp_path, good_run, capsys, command, fname, corrupt, what):
    from oemdm_spec.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(good_run, run_dir)
    ck = resolve_checkpoint(run_dir)
    corrupt(ck / fname)
    # (.lock is the run's ownership lock, taken before anything is read: it is no data of the run)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    argv = (["eval", str(run_dir), "--max-batches", "1"] if command == "eval"
            else ["train", "--resume", str(run_dir), "--steps", "20"])  # a finished run: give it work to do
    assert main(argv) == 2, what
    err = capsys.readouterr().err
    assert "oemdm: error:" in err and "checkpoint" in err and ck.name in err, err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before, "a failed load wrote or changed files"


def test_latest_naming_a_missing_directory_falls_back_or_fails_clearly(tmp_path, good_run, capsys):
    """`latest` naming a vanished directory: the newest complete step is used; with none left, exit 2."""
    from oemdm_spec.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(good_run, run_dir)
    (run_dir / "checkpoints" / "latest").write_text("step_0999999\n")
    assert resolve_checkpoint(run_dir).name == "step_0000010"
    assert main(["eval", str(run_dir), "--max-batches", "1"]) == 0
    capsys.readouterr()
    for d in (run_dir / "checkpoints").glob("step_*"):
        shutil.rmtree(d)
    for argv in (["eval", str(run_dir)], ["train", "--resume", str(run_dir)]):
        assert main(argv) == 2
        assert "step_0999999" in capsys.readouterr().err
