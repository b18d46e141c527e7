"""Exact resume: N steps in one go == N/2 steps, checkpoint, resume N/2 (bitwise on CPU, fixed seed)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from oemdm_spec.fast.checkpoint import resolve_checkpoint
from oemdm_spec.fast.config import build_config
from oemdm_spec.fast.trainer import train


def small_text(n_chars: int = 30_000, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "king", "shall", "speak", "of", "love", "and", "night", "to", "be", "or", "not", "my", "lord"]
    out, size = [], 0
    while size < n_chars:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def small_overrides(tmp_path, model: str, name: str, **kw) -> dict:
    data = tmp_path / "corpus.txt"
    if not data.exists():
        data.write_text(small_text())
    base = dict(model=model, data=str(data), seq_len=16, n_layer=1, n_head=2, d_model=16, cond_dim=8,
                batch_size=4, steps=6, warmup=2, eval_every=0, ckpt_every=0, log_every=1, order_stats_every=2,
                name=name, out_dir=str(tmp_path / "runs"), max_minutes=0.0, threads=1)
    base.update(kw)
    return base


@pytest.mark.parametrize("model", ["lomdm", "bd3lm"])
def test_resume_is_bitwise_identical(tmp_path, model):
    full = train(build_config(small_overrides(tmp_path, model, "full")), progress=False, final_eval=False)
    half = train(build_config(small_overrides(tmp_path, model, "half", stop_at=3)), progress=False,
                 final_eval=False)
    assert half.final_step == 3
    ck = resolve_checkpoint(half.run_dir)
    state = json.loads((ck / "state.json").read_text())
    assert state["step"] == 3 and state["config"]["model"] == model
    assert {p.name for p in ck.iterdir()} >= {"model.safetensors", "ema.safetensors", "optim.safetensors"}
    rest = train(resume=str(half.run_dir), overrides={"stop_at": 0}, progress=False, final_eval=False)
    assert rest.final_step == 6
    # the losses of steps 4..6 and every weight (model, EMA, optimiser state) are bitwise equal
    assert full.losses[3:] == rest.losses
    a = load_file(str(resolve_checkpoint(full.run_dir) / "model.safetensors"))
    b = load_file(str(resolve_checkpoint(rest.run_dir) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for fname in ("ema.safetensors", "optim.safetensors"):
        a = load_file(str(resolve_checkpoint(full.run_dir) / fname))
        b = load_file(str(resolve_checkpoint(rest.run_dir) / fname))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # ...and the run differs from one with another seed (the comparison is not vacuous)
    other = train(build_config(small_overrides(tmp_path, model, "other", seed=1, steps=3, stop_at=0)),
                  progress=False, final_eval=False)
    assert other.losses != full.losses[:3]
