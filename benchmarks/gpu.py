"""Thin wrapper: the GPU benchmark lives in ``oemdm_spec/fast/bench.py`` (``oemdm bench``).

    python benchmarks/gpu.py --out DIR       # = oemdm bench --out DIR
    python benchmarks/gpu.py --smoke         # = oemdm bench --smoke (CPU, Triton interpreter)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from oemdm_spec.fast.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
