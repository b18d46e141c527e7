"""Fuzzing the ``oemdm`` CLI with random argument lists: every run must exit 0 or 2 with a message — never a
traceback, never a hang.

The runs go through ``oemdm_spec.cli.main`` in-process (a child interpreter costs ~2 s of torch import per
example; ``test_reliability_inputs.py::test_real_process_exit_codes`` checks the real process's exit status).
A SIGALRM guard turns a hang into a failure. Training arguments always start from a 1-layer, 2-step base, so
an argument list that happens to be valid trains for a second, not for minutes. Not fuzzed: ``bench`` (runs
the GPU scripts), ``--compile yes`` (minutes of torch.compile on CPU), ``--device``/``--threads`` (machine
settings) and the ``gpt2-small``/``gpt2`` data (3 s tokenizer load): see docs/reliability.md.
Reproduce: ``python -m pytest proofs_tests/test_fuzz_cli.py -q``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import traceback
from pathlib import Path

import pytest
import torch

from oemdm_spec.cli import main

WORDS = ["the", "king", "shall", "speak", "of", "love", "and", "night", "to", "be", "or", "not", "my", "lord"]
FUZZ_KEYS = ["model", "preset", "seq_len", "n_layer", "n_head", "d_model", "cond_dim", "time_conditioning",
             "c1", "c2", "K", "t_min", "block_size", "steps", "batch_size", "lr", "head_lr", "warmup",
             "lr_decay", "weight_decay", "beta2", "grad_clip", "ema", "seed", "log_every", "eval_every",
             "eval_batches", "final_eval_batches", "eval_batch_size", "order_stats_every", "ckpt_every",
             "sample_len", "num_samples", "stop_at", "max_minutes", "dtype", "data", "name"]
N_EXAMPLES = 150
VALUES = ["-1", "0", "1", "2", "4", "0.5", "0.7", "nan", "inf", "-inf", "abc", "", "true", "no", "lomdm", "mdlm",
          "genmd4", "bd3lm", "ar", "gpt", "tiny", "cosine", "constant", "fp32", "bf16", "x y", "--", "é"]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("the command did not finish within the guard")


def call(argv: list[str], capsys, limit_s: int = 60) -> tuple[int | None, str, str, str | None]:
    """(exit code or None, stdout, stderr, traceback of an uncaught exception or None)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    crash = None
    rc: int | None = None
    try:
        rc = main(argv)
    except SystemExit as e:  # main() should return, but a SystemExit with code 0/2 is still a clean exit
        rc = int(e.code or 0) if isinstance(e.code, int) or e.code is None else 2
    except BaseException:  # noqa: BLE001 - any escape (including Hang) is the finding
        crash = traceback.format_exc(limit=-3)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        torch.set_grad_enabled(True)  # cli.load_run turns autograd off process-wide
    out = capsys.readouterr()
    return rc, out.out, out.err, crash


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    tmp = tmp_path_factory.mktemp("clifuzz")
    data = tmp / "corpus.txt"
    data.write_text(" ".join(WORDS[(i * 5 + i // 7) % len(WORDS)] for i in range(2000)))
    (tmp / "empty.txt").write_text("")
    (tmp / "a_file").write_text("x")
    over = parse_overrides(base_train(tmp, data, "runs") + ["--name", "ok", "--model", "mdlm"])
    train(build_config(over), progress=False, final_eval=False)
    return {"tmp": tmp, "data": data, "run": tmp / "runs" / "ok"}


def base_train(tmp: Path, data: Path, out: str = "runs_fuzz") -> list[str]:
    kw = dict(data=data, seq_len=16, n_layer=1, n_head=2, d_model=16, cond_dim=8, batch_size=4, steps=2,
              warmup=1, eval_every=0, eval_batches=1, ckpt_every=0, log_every=1, order_stats_every=0,
              final_eval_batches=1, eval_batch_size=8, sample_len=16, num_samples=1, name="fz",
              out_dir=tmp / out, max_minutes=0, threads=1, compile="no", device="cpu")
    return [a for k, v in kw.items() for a in (f"--{k}", str(v))]


def pick_path(rng: random.Random, w: dict[str, Path]) -> str:
    return rng.choice([str(w["run"]), str(w["tmp"] / "none"), str(w["tmp"] / "empty.txt"),
                       str(w["tmp"] / "a_file"), str(w["run"] / "checkpoints"), ""])


INTS = ["-1", "0", "1", "2", "3", "4", "8", "16"]
FLOATS = ["-1", "0", "1e-3", "0.3", "0.5", "0.7", "0.99", "1", "2", "nan", "inf"]
CHOICES = {"model": ["lomdm", "mdlm", "genmd4", "bd3lm", "ar", "gpt"], "preset": ["tiny", "huge"],
           "lr_decay": ["cosine", "constant", "linear"], "dtype": ["fp32", "auto", "bf16", "fp64"],
           "time_conditioning": ["true", "false", "maybe"], "name": ["a", "b/c", "..", ""]}


def typed_value(rng: random.Random, key: str) -> str:
    """Mostly a value of the key's type (so some lists are valid and train), sometimes anything."""
    if rng.random() < 0.1:
        return rng.choice(VALUES)
    if key in CHOICES:
        return rng.choice(CHOICES[key])
    from oemdm_spec.fast.config import TrainConfig

    typ = TrainConfig.__dataclass_fields__[key].type
    return rng.choice(INTS if typ in ("int", int) else FLOATS)


def typed_option(rng: random.Random, opt: str, w: dict[str, Path]) -> str:
    if rng.random() < 0.1:
        return rng.choice([*VALUES, pick_path(rng, w)])
    if opt in ("--text", ):
        return rng.choice([str(w["data"]), str(w["tmp"] / "empty.txt"), str(w["tmp"] / "none")])
    if opt == "--out":
        return str(w["tmp"] / "out.png")
    if opt == "--split":
        return rng.choice(["train", "validation", "test", "dev"])
    if opt == "--sampler":
        return rng.choice(["first-hitting", "grid", "topk", "beam"])
    if opt == "--infill":
        return rng.choice(["to be __ not", "_", "", "____________________", "x" * 40 + "_", "é_"])
    if opt == "--placeholder":
        return rng.choice(["_", "", "ab", "t"])
    return rng.choice(INTS)


def random_argv(rng: random.Random, w: dict[str, Path], only_invalid: bool = False) -> list[str]:
    """One random argument list. ``only_invalid``: it must fail while parsing (an unknown key or a run
    directory that does not exist)."""
    cmds = ["train", "eval", "sample", "plot", "compare"] + ([] if only_invalid else ["bogus", "--help", "train"])
    cmd = rng.choice(cmds)
    out = "runs_invalid" if only_invalid else "runs_fuzz"
    if cmd in ("train", "compare"):
        extra: list[str] = []
        for _ in range(rng.randint(1 if only_invalid else 0, 4)):
            key = rng.choice(FUZZ_KEYS)
            val = pick_path(rng, w) if key == "data" else typed_value(rng, key)
            if only_invalid:  # a misspelt key: parse-time failure, whatever else is on the line
                key = rng.choice([key + "z", "x" + key, key.upper(), "learning_rate", "cfg"])
            form = rng.choice(["pair", "pair", "eq", "dash", "bare"] if not only_invalid else ["pair", "eq", "bare"])
            name = key.replace("_", "-") if form == "dash" else key
            extra += [f"--{name}={val}"] if form == "eq" else ([f"--{name}"] if form == "bare" else [f"--{name}", val])
        if cmd == "train":
            if not only_invalid and rng.random() < 0.3:
                extra = ["--resume", pick_path(rng, w), *extra]
            return ["train", *base_train(w["tmp"], w["data"], out), *extra]
        models = rng.choice(["mdlm", "mdlm,gpt", "", ",", "lomdm-const,xyz", "ar,ar,gpt", "xyz"])
        if models == "mdlm" and not only_invalid:
            models = "mdlm,gpt"  # a valid compare trains five or more models: keep the fuzz cheap
        return ["compare", "--models", models, "--out", str(w["tmp"] / "cmp"),
                *base_train(w["tmp"], w["data"], out), *extra]
    if cmd in ("eval", "sample", "plot"):
        args = [cmd]
        if only_invalid:
            args.append(str(w["tmp"] / "none"))
        elif rng.random() < 0.9:
            args.append(str(w["run"]) if rng.random() < 0.6 else pick_path(rng, w))
        opts = {"eval": ["--text", "--split", "--seed", "--repeats", "--batch-size", "--max-batches", "--no-ema"],
                "sample": ["--num", "--sampler", "--steps", "--length", "--seed", "--infill", "--placeholder",
                           "--out"],
                "plot": []}[cmd]
        for _ in range(rng.randint(0, 3)):
            opt = rng.choice([*opts, "--bogus"] if not only_invalid else opts or ["--bogus"])
            args.append(opt)
            if opt != "--no-ema":
                args.append(typed_option(rng, opt, w))
        return args
    return [cmd, *rng.choices(VALUES, k=rng.randint(0, 3))]


def test_cli_fuzz_every_run_exits_0_or_2(world, capsys):
    """Random argument lists for every command. Collects all crashes, then fails listing them."""
    crashes: list[tuple[list[str], str]] = []
    rng = random.Random(20260211)
    for _ in range(N_EXAMPLES):
        argv = random_argv(rng, world)
        rc, out, err, crash = call(argv, capsys)
        if os.environ.get("OEMDM_FUZZ_VERBOSE"):
            print(rc, (crash or "").strip().splitlines()[-1:], argv, file=sys.__stderr__)
        if crash is not None:
            crashes.append((argv, crash.strip().splitlines()[-1]))
            continue
        assert rc in (0, 2), (argv, rc, err[-500:])
        if rc == 2:
            assert err.strip() or out.strip(), f"exit 2 without a message: {argv}"
    assert not crashes, "\n".join(f"{c}  <-  {a}" for a, c in crashes[:12])


def test_cli_fuzz_parse_errors_exit_2_fast_and_write_nothing(world, capsys):
    """Argument lists with an unknown key, or a path that does not exist, fail with exit code 2 before any
    work: nothing written (speed is not asserted here; a hang is caught by call's limit_s)."""
    out_dirs = [world["tmp"] / "runs_invalid", world["tmp"] / "cmp_invalid"]
    rng = random.Random(7)
    for _ in range(N_EXAMPLES):
        argv = random_argv(rng, world, only_invalid=True)
        argv = [str(world["tmp"] / "cmp_invalid") if a == str(world["tmp"] / "cmp") else a for a in argv]
        rc, out, err, crash = call(argv, capsys, limit_s=20)
        assert crash is None, (argv, crash)
        assert rc == 2, (argv, rc, err[-500:])
        assert "error" in err, (argv, err)
        for d in out_dirs:
            assert not d.exists(), (argv, d)
