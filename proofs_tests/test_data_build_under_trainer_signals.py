"""A multi-process cache build inside the trainer's signal handlers finishes (regression: forked encoder
workers inherited the trainer's SIGTERM handler, which only sets a flag, so Pool.terminate() waited for them
forever and `oemdm train --data lm1b:...` hung after tokenising)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_parallel_build_finishes_under_stop_signals(tmp_path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for split, n in (("train", 600), ("validation", 60)):
        with open(docs / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"sentence number {i} of the {split} split."}) + "\n")
    code = textwrap.dedent(f"""
        from oemdm_spec.data import open_corpus
        from oemdm_spec.fast.signals import StopSignals
        with StopSignals():
            c = open_corpus({str(docs)!r}, tokenizer="bert-base-uncased", protocol="padded", seq_len=16,
                            num_proc=2, cache_dir={str(tmp_path / "cache")!r})
        print(len(c["train"]))
    """)
    # a hang is the failure: the timeout turns it into an error instead of a stuck CI job
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "600"
