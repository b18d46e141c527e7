"""FSDP2: `--parallel fsdp` under torchrun (2 CPU processes, gloo) trains the same model as one process.

Two independent computations of the same run: the single-process trainer on the global batch, and two ranks
that each hold half of every weight, gradient and Adam moment and see half of the batch. After a few steps
with a periodic evaluation and checkpoint (both gather the shards), the final checkpoint's weights, EMA and
Adam moments agree. A second FSDP run, killed at its step-2 checkpoint and resumed, reproduces the
uninterrupted FSDP run exactly.

Tolerance: reduce-scatter averages the two half-batch gradients in another order than the full-batch
backward, so gradients differ by float32 rounding (~1e-7 relative). Adam divides by sqrt(v), which keeps
these relative errors about the same size, so after 4 steps at lr 1e-3 the weights differ by ~1e-9
absolute. rtol 1e-4 / atol 1e-6 is well above that. A rank that trained on the wrong half of the batch, or
a shard laid out wrongly on load, moves weights by ~lr = 1e-3 and fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from oemdm_spec.fast.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
WORDS = ["the", "king", "shall", "speak", "of", "love", "and", "night", "to", "be", "or", "not", "my", "lord"]

WORKER = """
import sys
import torch
from oemdm_spec.fast.config import build_config, parse_overrides
from oemdm_spec.fast.trainer import train

torch.set_num_threads(1)
mode, arg = sys.argv[1], sys.argv[2:]
if mode == "resume":
    train(resume=arg[0], overrides={"stop_at": 0}, progress=False, final_eval=False)
else:
    train(build_config(parse_overrides(arg)), progress=False, final_eval=False)
"""


def overrides(tmp: Path, name: str, model: str, **kw: object) -> list[str]:
    data = tmp / "corpus.txt"
    if not data.exists():
        data.write_text(" ".join(WORDS[(i * 7 + i // 3) % len(WORDS)] for i in range(3000)))
    base: dict[str, object] = dict(
        model=model, data=data, seq_len=16, n_layer=2, n_head=2, d_model=16, cond_dim=8, batch_size=8, steps=4,
        warmup=1, eval_every=2, eval_batches=1, final_eval_batches=1, eval_batch_size=8, ckpt_every=2,
        log_every=1, order_stats_every=0, name=name, out_dir=tmp / "runs", max_minutes=0, threads=1, seed=0,
        parallel="fsdp", ema=0.9, grad_clip=1.0,
    )
    base.update(kw)
    return [a for k, v in base.items() for a in (f"--{k}", str(v))]


def torchrun(tmp: Path, *args: str) -> None:
    script = tmp / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "OEMDM_KERNEL_BACKEND": "torch"}
    env.pop("TRITON_INTERPRET", None)  # the CPU trainer uses the PyTorch kernels
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


# Parameters that only add the same constant to every position's order score. NormSig subtracts the mean
# score, so their gradient is exactly zero, and what the backward computes for them is rounding noise. Adam
# divides that noise by its own RMS and moves them by about ±lr per step in a direction set by the noise, so
# two correct runs disagree on them by ~lr. They do not change w = c1 + c2·NormSig(·) at all.
SHIFT_ONLY = ("phi.head.bias", "psi.head.bias", "phi.norm.bias", "psi.norm.bias")


def optimizer_names(model_type: str, tmp: Path) -> dict[str, str]:
    """'idx.exp_avg' → 'param name.exp_avg', from the trainer's own parameter-group order."""
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.model import OeMDM
    from oemdm_spec.fast.trainer import make_optimizer

    cfg = build_config(parse_overrides(overrides(tmp, "names", model_type)))
    model = OeMDM(cfg.model_config(vocab_size=8))
    names = {id(p): n for n, p in model.named_parameters()}
    params = [p for g in make_optimizer(model, cfg, fused=False).param_groups for p in g["params"]]
    return {str(i): names[id(p)] for i, p in enumerate(params)}


def assert_state_close(a: dict, b: dict, exact: bool = False) -> int:
    assert set(a) == set(b)
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    return len(a)


@pytest.mark.parametrize("model", ["lomdm", "bd3lm"])
def test_fsdp_two_ranks_equal_one_process_and_resume_exactly(tmp_path, model):
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    torchrun(tmp_path, "new", *overrides(tmp_path, "fsdp", model))
    single = train(build_config(parse_overrides(overrides(tmp_path, "single", model, parallel="ddp"))),
                   progress=False, final_eval=False)
    assert single.final_step == 4
    runs = tmp_path / "runs"
    f, s = load_checkpoint(runs / "fsdp"), load_checkpoint(runs / "single")
    assert f["step"] == s["step"] == 4
    summary = json.loads((runs / "fsdp" / "summary.json").read_text())
    assert (summary["parallel"], summary["world_size"]) == ("fsdp", 2), summary  # it really sharded
    # the run moved its weights: the comparison is not of two untrained models
    init = load_checkpoint(runs / "fsdp" / "checkpoints" / "step_0000002")
    assert any(not torch.equal(f["model"][k], init["model"][k]) for k in f["model"])
    def comparable(state: dict, rename: dict[str, str] | None = None) -> dict:
        def name(k: str) -> str:
            if rename is None:
                return k
            idx, what = k.split(".", 1)
            return f"{rename[idx]}.{what}"

        return {k: v for k, v in state.items() if not name(k).startswith(SHIFT_ONLY)}

    names = optimizer_names(model, tmp_path)
    n = assert_state_close(comparable(f["model"]), comparable(s["model"]))
    n += assert_state_close(comparable(f["ema"]), comparable(s["ema"]))
    n += assert_state_close(comparable(f["optim_tensors"], names), comparable(s["optim_tensors"], names))
    assert n > 20

    # kill-free resume: copy the step-2 checkpoint into a fresh run and resume it under FSDP
    import shutil

    resumed = runs / "fsdp_resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(runs / "fsdp" / "checkpoints" / "step_0000002", resumed / "checkpoints" / "step_0000002")
    (resumed / "checkpoints" / "latest").write_text("step_0000002\n")
    torchrun(tmp_path, "resume", str(resumed))
    r = load_checkpoint(resumed)
    assert r["step"] == 4
    assert_state_close(r["model"], f["model"], exact=True)
    assert_state_close(r["optim_tensors"], f["optim_tensors"], exact=True)
