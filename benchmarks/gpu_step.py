"""Thin wrapper: the training-step benchmark is the ``step`` section of ``oemdm bench``.

    python benchmarks/gpu_step.py --out DIR  # = oemdm bench --sections gate,step --out DIR
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from oemdm_spec.fast.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["--sections", "gate,step", *sys.argv[1:]]))
