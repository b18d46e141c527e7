"""Record (or check) the bitwise golden runs of the fast path.

Each model type trains a small model for 30 steps on the embedded corpus on one CPU thread with a fixed seed,
evaluates once, and draws a few samples with every sampler that applies. What is kept: every logged loss and
NELBO estimate (as float.hex, so equality is bitwise), the validation bound, and SHA-256 hashes of the final
weights, the EMA and the sampled tokens and orders. A refactor that keeps the numerics gives the same file.

    python proofs_tests/golden/record.py            # rewrite proofs_tests/golden/runs.json
    python proofs_tests/golden/record.py --check    # compare against it (what test_fast_golden.py does)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BASE_SAMPLERS = ("first-hitting", "grid", "topk")  # recorded before the adaptive samplers existed
GOLDEN = HERE / "runs.json"

SMALL = dict(preset="tiny", steps=30, seq_len=32, n_layer=2, n_head=2, d_model=32, cond_dim=16, batch_size=8,
             warmup=5, log_every=1, eval_every=0, final_eval_batches=2, eval_batch_size=16, ckpt_every=0,
             order_stats_every=10, threads=1, seed=0, max_minutes=0.0)

# name -> overrides on top of SMALL; one per model type plus the variants with their own code paths
VARIANTS: dict[str, dict] = {
    "mdlm": {"model": "mdlm"},
    "mdlm-time": {"model": "mdlm", "time_conditioning": True},
    "genmd4": {"model": "genmd4"},
    "bd3lm": {"model": "bd3lm", "block_size": 8},
    "ar": {"model": "ar"},
    "lomdm": {"model": "lomdm"},
    "lomdm-logspace": {"model": "lomdm", "order_param": "logspace", "c1": 1.0, "c2": 2.0},
}



def sha(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def state_hash(module) -> str:
    sd = module.state_dict()
    return sha(sd[k] for k in sorted(sd))


def run_one(name: str, out_dir: str) -> dict:
    import oemdm_spec.fast as fast

    torch.set_num_threads(1)
    cfg = fast.build_config({**SMALL, **VARIANTS[name], "out_dir": out_dir, "name": name})
    res = fast.train(cfg, progress=False)
    rec: dict = {
        "losses": [float(v).hex() for v in res.losses],
        "val_nelbo": float(res.eval.nelbo).hex(),
        "val_se": float(res.eval.se).hex(),
        "model_sha256": state_hash(res.model),
        "ema_sha256": state_hash(res.ema),
    }
    with open(res.run_dir / "log.csv") as f:
        rec["log_nelbo"] = [line.split(",")[2] for line in f.read().splitlines()[1:]]
    samples = {}
    for sampler in [s for s in BASE_SAMPLERS if s in res.ema.process.samplers]:
        tokens, order = fast.sample(res.ema, 3, sampler=sampler, steps=8, seed=5)
        samples[sampler] = sha([tokens, order])
    rec["samples_sha256"] = samples
    return rec


def record_all(names=None) -> dict:
    names = list(names or VARIANTS)
    with tempfile.TemporaryDirectory() as d:
        return {n: run_one(n, d) for n in names}


COMMAND = "python proofs_tests/golden/record.py"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--only", default="", help="comma-separated variant names")
    args = p.parse_args()
    names = args.only.split(",") if args.only else None
    got = record_all(names)
    if args.check:
        want = json.loads(GOLDEN.read_text())["runs"]
        bad = [n for n in got if got[n] != want.get(n)]
        print("identical" if not bad else f"differ: {bad}")
        return 1 if bad else 0
    old = json.loads(GOLDEN.read_text())["runs"] if GOLDEN.exists() else {}
    old.update(got)
    GOLDEN.write_text(json.dumps({"command": COMMAND, "config": SMALL, "variants": VARIANTS, "runs": old},
                                 indent=1) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    sys.exit(main())
