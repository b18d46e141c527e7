"""Scale measurements of the data layer (docs/data.md §8). Run: ``nice -n 10 python benchmarks/data_scale.py``.

1. Writes an OpenWebText-like corpus under ``--root`` (default /tmp/oemdm_owt_like): jsonl files of documents cut
   from the embedded corpus with random (log-normal) lengths, ``--gb`` GB of text, plus a 100 MB one.
2. Tokenises with raw tiktoken (``encode_ordinary_batch`` of the same documents, one thread) and through
   ``open_corpus(... protocol="wrap", tokenizer="gpt2", seq_len=1024)`` with 1 and with 2 processes; prints MB/s.
3. Cache size; ``get_batch`` throughput for batch 512 x 1024; peak RSS of 20 ``get_batch`` calls on the big and
   the small cache, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_corpus(root: Path, n_bytes: int, seed: int = 0, per_file: int = 64 << 20) -> int:
    from oemdm_spec.data import load_embedded_corpus

    if (root / "DONE").exists():
        return int((root / "DONE").read_text())
    shutil.rmtree(root, ignore_errors=True)
    (root / "train").mkdir(parents=True)  # a split-named folder: every document is in the train split
    text = load_embedded_corpus()["train"]
    rng = np.random.default_rng(seed)
    total, k, f, fsize = 0, 0, None, 0
    while total < n_bytes:
        if f is None or fsize >= per_file:
            if f:
                f.close()
            f = open(root / "train" / f"part{k:04d}.jsonl", "w", encoding="utf-8")
            k, fsize = k + 1, 0
        n = int(min(len(text) - 1, max(200, rng.lognormal(8.0, 1.0))))  # median ~3 kB like OWT
        start = int(rng.integers(0, len(text) - n))
        line = json.dumps({"text": text[start : start + n]}) + "\n"
        f.write(line)
        fsize += len(line)
        total += n
    f.close()
    (root / "DONE").write_text(str(total))
    return total


def docs_of(root: Path):
    for p in sorted(root.glob("train/*.jsonl")):
        with p.open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def raw_tiktoken(root: Path) -> tuple[float, int]:
    from oemdm_spec.data import get_tokenizer

    tok = get_tokenizer("gpt2")
    t0, n, batch = time.perf_counter(), 0, []
    for d in docs_of(root):
        batch.append(d)
        if len(batch) == 256:
            n += sum(map(len, tok._enc.encode_ordinary_batch(batch, num_threads=1)))
            batch = []
    n += sum(map(len, tok._enc.encode_ordinary_batch(batch, num_threads=1)))
    return time.perf_counter() - t0, n


def build(root: Path, cache: Path, num_proc: int) -> tuple[float, object]:
    from oemdm_spec.data import open_corpus

    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    c = open_corpus(str(root), tokenizer="gpt2", protocol="wrap", seq_len=1024, splits=("train",),
                    cache_dir=cache, num_proc=num_proc)
    return time.perf_counter() - t0, c


def rss_child(root: Path, cache: Path) -> None:
    from oemdm_spec.data import open_corpus

    c = open_corpus(str(root), tokenizer="gpt2", protocol="wrap", seq_len=1024, splits=("train",), cache_dir=cache)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss0 = _vmrss_mb()
    for s in range(20):
        c.train.get_batch(s, 512, 0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_before_mb": base / 1024, "peak_rss_mb": peak / 1024, "vmrss_before_mb": rss0,
                      "vmrss_after_mb": _vmrss_mb()}))


def _vmrss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/oemdm_owt_like")
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--small-mb", type=float, default=100.0)
    ap.add_argument("--rss-child", nargs=2)
    a = ap.parse_args()
    if a.rss_child:
        rss_child(Path(a.rss_child[0]), Path(a.rss_child[1]))
        return
    root = Path(a.root)
    big, small = root / "big", root / "small"
    out: dict[str, object] = {}
    t0 = time.perf_counter()
    nb = make_corpus(big, int(a.gb * 1e9))
    ns = make_corpus(small, int(a.small_mb * 1e6))
    out["corpus_chars"] = {"big": nb, "small": ns, "gen_s": round(time.perf_counter() - t0, 1)}
    size_mb = sum(p.stat().st_size for p in big.glob("train/*.jsonl")) / 1e6
    out["jsonl_mb"] = round(size_mb, 1)
    print(json.dumps(out), flush=True)
    t_raw, n_raw = raw_tiktoken(big)
    out["tiktoken_raw"] = {"s": round(t_raw, 1), "MB/s": round(size_mb / t_raw, 2), "tokens": n_raw}
    print(json.dumps(out), flush=True)
    caches = {}
    for npr in (1, 2):
        cache = root / f"cache{npr}"
        t, c = build(big, cache, npr)
        caches[npr] = cache
        out[f"open_corpus_np{npr}"] = {"s": round(t, 1), "MB/s": round(size_mb / t, 2),
                                       "vs_tiktoken": round(t / t_raw, 2), "sequences": len(c.train)}
        print(json.dumps(out), flush=True)
    out["cache_mb"] = round(sum(p.stat().st_size for p in caches[1].glob("*.bin")) / 1e6, 1)
    shutil.rmtree(caches[2], ignore_errors=True)
    small_cache = root / "cache_small"
    build(small, small_cache, 2)
    from oemdm_spec.data import open_corpus

    c = open_corpus(str(big), tokenizer="gpt2", protocol="wrap", seq_len=1024, splits=("train",),
                    cache_dir=caches[1])
    c.train.get_batch(0, 512, 0)
    t0 = time.perf_counter()
    for s in range(1, 21):
        c.train.get_batch(s, 512, 0)
    dt = time.perf_counter() - t0
    out["get_batch_512x1024"] = {"tokens_per_s": round(20 * 512 * 1024 / dt), "ms_per_batch": round(dt / 20 * 1e3, 1)}
    for name, r, ch in (("big", big, caches[1]), ("small", small, small_cache)):
        res = subprocess.run([sys.executable, __file__, "--rss-child", str(r), str(ch)], capture_output=True,
                             text=True, check=True, env={**os.environ})
        out[f"rss_{name}"] = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
