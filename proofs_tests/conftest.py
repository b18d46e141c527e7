"""Test-suite set-up shared by every test module.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is defined, so it is set here, at import
time of the first conftest, unless the caller chose otherwise (the GPU script sets it to 0).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# Two CI cores and two xdist workers: one intra-op thread each avoids oversubscription.
torch.set_num_threads(int(os.environ.get("OEMDM_TEST_THREADS", "1")))
