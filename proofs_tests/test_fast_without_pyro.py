"""The fast path must import and train without pyro (the design card: `import oemdm_spec.fast` to train on a GPU
box that has torch and triton only). A child interpreter blocks every `pyro` import, then runs one loss step
and one sampling pass of every model type; a stray `import pyro` anywhere under oemdm_spec.fast fails it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import importlib.abc, sys

    class BlockPyro(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pyro" or name.startswith("pyro."):
                raise ImportError(f"pyro is blocked in this test (import {name!r})")
            return None

    sys.meta_path.insert(0, BlockPyro())
    import torch
    import oemdm_spec.fast as fast
    from oemdm_spec.fast.objectives import n_times_for, samples_for

    for typ in ("mdlm", "ar", "bd3lm", "genmd4", "lomdm"):
        torch.manual_seed(0)
        model = fast.OeMDM(fast.ModelConfig(vocab_size=7, seq_len=8, model_type=typ, n_layer=1, n_head=2,
                                            d_model=16, cond_dim=8, block_size=4))
        K = samples_for(model, 2)
        noise = fast.draw_step_noise(0, 0, global_batch=3, seq_len=8, K=K, t_min=1e-3, n_times=n_times_for(model))
        out = fast.oemdm_loss(model, torch.randint(0, 7, (3, 8)), noise, K=K)
        out.loss.backward()
        assert torch.isfinite(out.loss), typ
        tokens, _ = fast.sample(model, 2)
        assert tokens.shape == (2, 8) and int(tokens.max()) < 7, typ
    assert not any(m == "pyro" or m.startswith("pyro.") for m in sys.modules)
    print("ok")
""")


def test_fast_path_imports_and_trains_with_pyro_blocked():
    res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")


def test_the_blocker_really_blocks_pyro():
    """The control: the same blocker makes `import oemdm_spec.reference.distributions` fail, so the test above
    would notice a pyro import."""
    child = CHILD.split("import torch")[0] + "import oemdm_spec.reference.distributions\n"
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "pyro is blocked" in res.stderr
