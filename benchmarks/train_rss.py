"""Peak RSS of a short `oemdm train --preset gpt2-small` on two OpenWebText-like corpora of different sizes
(issue 12: nothing in the trainer may scale with the corpus). Corpora are jsonl directories generated from the
embedded text (benchmarks/data_scale.py:make_corpus) with a small validation split.

    python benchmarks/train_rss.py --sizes-mb 10,100 --root /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_scale import make_corpus  # noqa: E402

TRAIN = ["train", "--preset", "gpt2-small", "--model", "mdlm", "--n_layer", "1", "--d_model", "64", "--n_head",
         "2", "--cond_dim", "32", "--batch_size", "4", "--steps", "20", "--eval_every", "0",
         "--final_eval_batches", "1", "--eval_batch_size", "4", "--threads", "1", "--ema", "0",
         "--ckpt_every", "0", "--sample_len", "16", "--num_samples", "1"]


def corpus(root: Path, mb: float) -> Path:
    d = root / f"owt_like_{int(mb)}mb"
    if not (d / "validation").exists():
        make_corpus(d / "tmp", int(mb * 1e6))
        shutil.rmtree(d / "train", ignore_errors=True)
        (d / "tmp" / "train").rename(d / "train")
        (d / "validation").mkdir()
        lines = (d / "train" / "part0000.jsonl").read_text().splitlines()[:300]
        (d / "validation" / "part0000.jsonl").write_text("\n".join(lines) + "\n")
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", default="10,100")
    ap.add_argument("--root", default="/tmp/scale")
    args = ap.parse_args()
    root = Path(args.root)
    out = {}
    for mb in [float(s) for s in args.sizes_mb.split(",")]:
        d = corpus(root, mb)
        env_cache = root / f"cache_{int(mb)}"
        cmd = [sys.executable, "-m", "oemdm_spec", *TRAIN, "--data", str(d), "--out_dir", str(root / "runs"),
               "--name", f"rss_{int(mb)}mb_{int(time.time())}"]
        for phase in ("build", "cached"):  # the first run builds the token cache, the second only reads it
            t0 = time.time()
            log = open(root / f"train_{int(mb)}_{phase}.log", "w")
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "OEMDM_CACHE": str(env_cache)})
            _, status, usage = os.wait4(p.pid, 0)  # this child's own peak RSS (kB on Linux)
            if status:
                raise SystemExit(f"train failed ({status}): see {log.name}")
            out[f"{int(mb)}MB/{phase}"] = {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": time.time() - t0}
            cmd[-1] += "_2"
            print(f"{int(mb)} MB corpus, {phase}: peak RSS {usage.ru_maxrss / 1024:.0f} MB, "
                  f"{time.time() - t0:.0f} s", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
