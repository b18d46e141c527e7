"""Register and spill usage of the Triton kernels on sm_90 (H100), compiled ahead of time: **no GPU needed**.

Triton's wheel ships ``ptxas`` and ``cuobjdump``; ``triton.compile`` with a ``GPUTarget`` produces the cubin
on any machine. This is the one GPU fact measurable without a GPU: whether a launch configuration spills
registers to local memory (STACK > 0), which for a bandwidth-bound kernel is a large slowdown.

    PYTHONPATH=. python benchmarks/ptxas_usage.py            # table of configurations
    PYTHONPATH=. python benchmarks/ptxas_usage.py --json     # JSON list (used by the compile test)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # real JIT functions: must precede the kernels' definition
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from oemdm_spec.fast.kernels import _triton as K  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
_COMMON = {"x_stride": "i32", "g_stride": "i32", "tgt_ptr": "*i64", "a_ptr": "*fp32", "ah_ptr": "*fp32"}
_COMMON |= {"ga_ptr": "*fp32", "loss_ptr": "*fp32", "logpx_ptr": "*fp32"}


def _usage(fn, signature: dict, constexprs: dict, num_warps: int) -> dict:
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    kernel = triton.compile(src, target=TARGET, options={"num_warps": num_warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    out = subprocess.run([str(BIN / "cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    m = re.search(r"REG:(\d+) STACK:(\d+)", out.stdout)
    if m is None:
        raise RuntimeError(f"cuobjdump gave no resource line: {out.stdout[-500:]} {out.stderr[-500:]}")
    return {"regs": int(m.group(1)), "stack": int(m.group(2))}


def loss_usage(cfg: dict, dtype: str = "bf16", compute_grad: bool = True) -> dict:
    """Resource usage of the loss kernel for one launch configuration (as from ``loss_launch_config``)."""
    ptr = f"*{dtype}"
    if cfg["kind"] == "tile":
        sig = {"x_ptr": ptr, "g_ptr": ptr, **_COMMON, "N": "i32", "V": "i32"}
        sig |= {k: "constexpr" for k in ("BLOCK_R", "BLOCK_V", "COMPUTE_GRAD", "RELOAD")}
        const = {"BLOCK_R": cfg["BLOCK_R"], "BLOCK_V": cfg["BLOCK_V"], "COMPUTE_GRAD": compute_grad}
        const["RELOAD"] = cfg["RELOAD"]
        return _usage(K._row_loss_tile_kernel, sig, const, cfg["num_warps"])
    sig = {"x_ptr": ptr, "g_ptr": ptr, **_COMMON, "V": "i32"}
    sig |= {k: "constexpr" for k in ("BLOCK_V", "COMPUTE_GRAD", "NEG_BIG")}
    const = {"BLOCK_V": cfg["BLOCK_V"], "COMPUTE_GRAD": compute_grad, "NEG_BIG": K._NEG_BIG}
    return _usage(K._row_loss_chunked_kernel, sig, const, cfg["num_warps"])


def mask_usage(block_l: int = 1024, num_warps: int = 4) -> dict:
    sig = {"x_ptr": "*i64", "t_ptr": "*fp32", "w_ptr": "*fp32", "z_ptr": "*i64", "part_ptr": "*fp32"}
    sig |= {k: "i32" for k in ("seed", "B", "L", "K", "n_blk", "mask_id")} | {"BLOCK_L": "constexpr"}
    return _usage(K._forward_mask_kernel, sig, {"BLOCK_L": block_l}, num_warps)


def rows() -> list[dict]:
    """The default configuration for several vocabularies, plus the whole-row tiles the GPU sweep tries."""
    out = []
    for v in (1000, 8192, 16384, 30522, 50258, 100000):
        cfg = K.loss_launch_config(32768, v, interpreted=False)
        out.append({"what": f"default, V={v}", "cfg": cfg, **loss_usage(cfg)})
    for bv, nw, reload in ((65536, 32, False), (65536, 32, True), (65536, 16, True), (32768, 32, False)):
        cfg = {"kind": "tile", "BLOCK_R": 1, "BLOCK_V": bv, "num_warps": nw, "RELOAD": reload}
        out.append({"what": "whole-row tile", "cfg": cfg, **loss_usage(cfg)})
    for bv, nw in ((16384, 16), (16384, 8), (4096, 4)):
        cfg = {"kind": "chunked", "BLOCK_V": bv, "num_warps": nw}
        out.append({"what": "chunked", "cfg": cfg, **loss_usage(cfg)})
    out.append({"what": "forward mask", "cfg": {"BLOCK_L": 1024, "num_warps": 4}, **mask_usage()})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    table = rows()
    if args.json:
        print(json.dumps(table))
        return 0
    print(f"sm_90 resource usage (triton {triton.__version__}; STACK > 0 means register spills)")
    print("| kernel | config | regs/thread | stack bytes |\n|---|---|---|---|")
    for r in table:
        print(f"| {r['what']} | {json.dumps(r['cfg'])} | {r['regs']} | {r['stack']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
