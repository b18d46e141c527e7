"""DDP: 2 CPU processes (torchrun, gloo) produce the gradients of the single-process run on the same global
batch — batches and noise are drawn for the global batch and sliced by rank."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

SETUP = """
import torch
from oemdm_spec.fast.model import ModelConfig, OeMDM
from oemdm_spec.fast.objectives import LossModule, draw_step_noise, samples_for, n_times_for

GLOBAL_B, L, V = 8, 16, 13

def build(model_type):
    torch.manual_seed(0)
    m = OeMDM(ModelConfig(vocab_size=V, seq_len=L, model_type=model_type, n_layer=1, n_head=2, d_model=16,
                          cond_dim=8))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ada" in name or "out" in name or "head" in name:
                p.add_(0.3 * torch.randn_like(p))
    return m

def global_batch():
    return torch.randint(0, V, (GLOBAL_B, L), generator=torch.Generator().manual_seed(3))

def noise(m, rank, world):
    return draw_step_noise(11, 4, global_batch=GLOBAL_B, seq_len=L, K=samples_for(m, 2), t_min=1e-3,
                           n_times=n_times_for(m), rank=rank, world_size=world)
"""

WORKER = SETUP + """
import sys
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from oemdm_spec.fast.distributed import setup_distributed, teardown_distributed

info = setup_distributed("cpu")
torch.set_num_threads(1)
model_type, out = sys.argv[1], sys.argv[2]
m = build(model_type)
ddp = DDP(LossModule(m, 2))
local = GLOBAL_B // info.world_size
x = global_batch()[info.rank * local:(info.rank + 1) * local]
nz = noise(m, info.rank, info.world_size)
ddp(x, nz.t, nz.u).loss.backward()
if info.rank == 0:
    torch.save({n: p.grad for n, p in m.named_parameters()}, out)
teardown_distributed()
"""


@pytest.mark.parametrize("model_type", ["lomdm"])
def test_ddp_two_process_gradients_equal_single_process(tmp_path, model_type):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    out = tmp_path / "grads.pt"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           model_type, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_grads = torch.load(out)

    ns: dict = {}
    exec(textwrap.dedent(SETUP), ns)  # the same model, batch and noise, in this process, world size 1
    m = ns["build"](model_type)
    from oemdm_spec.fast.objectives import LossModule

    nz = ns["noise"](m, 0, 1)
    LossModule(m, 2)(ns["global_batch"](), nz.t, nz.u).loss.backward()
    nonzero = 0
    for name, p in m.named_parameters():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
        nonzero += int(float(p.grad.abs().max()) > 0)
    assert nonzero > 5
