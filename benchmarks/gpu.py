"""GPU benchmark and GPU property check of the fast-path kernels, in one process per table.

Usage (repository root, on a machine with a CUDA GPU)::

    PYTHONPATH=. python benchmarks/gpu.py                  # the tables (≈ 2–4 min on an H100)
    PYTHONPATH=. python benchmarks/gpu.py --json out.json  # … and the numbers as JSON
    PYTHONPATH=. python benchmarks/gpu.py --check          # property tests on the GPU, float32 and bfloat16
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/gpu.py --device cpu --tiny   # smoke test of this script

What it measures (every baseline is rerun here, beside the kernel, as performance-anchors.md demands):

1. the bytes floor: a device-to-device copy of the N×V bf16 logits (= read the logits once + write the
   gradient once), and the copy bandwidth it implies;
2. OeMDM loss forward + backward at N = 32768, V = 50258, bf16: eager PyTorch (fp32 log-softmax, gather,
   weight), ``torch.compile`` of the same, the Triton kernel (grad_output ≡ 1, and per-row grad_output,
   which adds the in-place rescale pass), the PyTorch fallback; each as × floor and × vs compile;
   plus a sweep of the kernel's launch parameters (tile vs chunked, num_warps, BLOCK_V, RELOAD);
3. fused linear + loss at d = 768: time and peak memory vs unfused (eager, compiled, matmul + kernel)
   and vs its three matmuls alone;
4. forward masking (B = 32, L = 1024, K = 2): Triton vs the PyTorch fallback vs a naive PyTorch version.

Targets (docs/performance.md): kernel ≤ 1.3× floor and ≥ 6× faster than torch.compile; fused linear
≤ 1.25× its matmuls and ≤ 25 % of the unfused peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="run proofs_tests/test_kernels_*.py on the GPU")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="small sizes (a smoke test of this script)")
    p.add_argument("--n", type=int, default=32768, help="masked rows N")
    p.add_argument("--v", type=int, default=50258, help="vocabulary V")
    p.add_argument("--d", type=int, default=768, help="hidden size for the fused linear")
    p.add_argument("--chunk", type=int, default=None, help="chunk_size of the fused linear (default: its own)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--skip-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.n, args.v, args.d, args.reps = 96, 1001, 32, 3
    return args


def run_check() -> int:
    """The property tests with the GPU as device, bf16 and fp32, GPU tolerances (test_kernels_common.py)."""
    env = dict(os.environ)
    env.update(
        OEMDM_TEST_DEVICE="cuda",
        OEMDM_TEST_DTYPES="float32,bfloat16",
        TRITON_INTERPRET="0",
        PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
    )
    tests = sorted(str(p) for p in (ROOT / "proofs_tests").glob("test_kernels_*.py"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5", *tests]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env, cwd=ROOT)


class Bench:
    """Median wall time of a callable (CUDA events on a GPU) and its peak extra memory."""

    def __init__(self, device: str, reps: int) -> None:
        import torch

        self.torch, self.device, self.reps = torch, device, reps
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def time_ms(self, fn, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(self.reps):
            if self.cuda:
                start = self.torch.cuda.Event(enable_timing=True)
                end = self.torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def peak_bytes(self, fn) -> float | None:
        """Peak allocated bytes above what was allocated before the call (None on a CPU)."""
        if not self.cuda:
            return None
        self.sync()
        self.torch.cuda.reset_peak_memory_stats()
        base = self.torch.cuda.memory_allocated()
        fn()
        self.sync()
        return float(self.torch.cuda.max_memory_allocated() - base)


def eager_loss(logits, target, A, A_hat):
    """The baseline formula of performance-anchors.md: fp32 log-softmax, gather, weight (+ L_velocity)."""
    import torch

    log_px = torch.log_softmax(logits.float(), dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
    return -A * log_px + A * (A.log() - A_hat.log()) - (A - A_hat)


def fmt_table(title: str, header: list[str], rows: list[list[object]]) -> str:
    def cell(x: object) -> str:
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
        return "–" if x is None else str(x)

    lines = [f"\n### {title}", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def maybe_compile(torch, fn, args: argparse.Namespace):
    """torch.compile(fn), or None when skipped or unavailable (reported)."""
    if args.skip_compile:
        return None
    try:
        return torch.compile(fn)
    except Exception as e:  # noqa: BLE001 - report and carry on
        print(f"torch.compile unavailable: {e!r}")
        return None


def section_floor(torch, bench: Bench, args: argparse.Namespace, dev, gen, results: dict, floor: float | None = None):
    """Bytes floor: one copy of the N×V bf16 logits (read once + write once) and the bandwidth it implies."""
    n, v, dt = args.n, args.v, torch.bfloat16
    src = torch.randn(n, v, device=dev, generator=gen, dtype=torch.float32).to(dt)
    dst = torch.empty_like(src)
    floor = bench.time_ms(lambda: dst.copy_(src))
    nbytes = 2 * src.numel() * src.element_size()
    bw = nbytes / floor / 1e9  # TB/s (bytes / ms / 1e9)
    results["floor_ms"], results["copy_TBps"] = floor, bw
    print(f"\nbytes floor (copy of the {n}×{v} bf16 logits = read once + write once): {floor:.3f} ms, {bw:.2f} TB/s")
    return floor


def section_loss(torch, bench: Bench, args: argparse.Namespace, dev, gen, results: dict, floor: float | None = None):
    """Loss forward + backward (all variants), evaluation mode, and the kernel's launch-parameter sweep."""
    import triton

    from oemdm_spec.fast.kernels import oemdm_row_loss
    from oemdm_spec.fast.kernels._triton import MAX_TILE, loss_launch_config, triton_row_loss_forward

    n, v, dt = args.n, args.v, torch.bfloat16
    logits = (2.0 * torch.randn(n, v, device=dev, generator=gen)).to(dt).requires_grad_(True)
    target = torch.randint(0, v, (n,), device=dev, generator=gen)
    A = torch.rand(n, device=dev, generator=gen) * 3 + 0.05
    A_hat = torch.rand(n, device=dev, generator=gen) * 3 + 0.05
    row_w = torch.rand(n, device=dev, generator=gen)
    mean_w = torch.full((n,), 1.0 / n, device=dev)

    def step(fn, weights=None):
        def run():
            logits.grad = None
            out = fn(logits, target, A, A_hat)
            (out.sum() if weights is None else (out * weights).sum()).backward()

        return run

    compiled = maybe_compile(torch, eager_loss, args)
    variants = [
        ("eager PyTorch (fp32 log-softmax)", step(eager_loss)),
        ("torch.compile of the same", step(compiled) if compiled else None),
        ("Triton kernel, grad_output ≡ 1", step(lambda *a: oemdm_row_loss(*a, backend="triton"))),
        ("Triton kernel, per-row grad_output", step(lambda *a: oemdm_row_loss(*a, backend="triton"), row_w)),
        ("Triton kernel, mean as grad_output 1/N", step(lambda *a: oemdm_row_loss(*a, backend="triton"), mean_w)),
        (
            "Triton kernel, mean as row_weight=1/N",
            step(lambda *a: oemdm_row_loss(*a, row_weight=1 / n, backend="triton")),
        ),
        ("PyTorch fallback (chunked)", step(lambda *a: oemdm_row_loss(*a, backend="torch"))),
    ]
    times = {}
    for name, fn in variants:
        try:
            times[name] = None if fn is None else bench.time_ms(fn)
        except Exception as e:  # noqa: BLE001
            print(f"{name}: failed: {e!r}")
            times[name] = None
    comp = times.get("torch.compile of the same")
    rows = [
        [k, t, None if t is None else t / floor, None if (t is None or not comp) else comp / t]
        for k, t in times.items()
    ]
    print(
        fmt_table(f"OeMDM loss fwd+bwd, N={n}, V={v}, bf16", ["variant", "ms", "× floor", "speed-up vs compile"], rows)
    )
    results["loss_fwd_bwd_ms"] = times

    with torch.no_grad():
        ev = {
            "eager": bench.time_ms(lambda: eager_loss(logits, target, A, A_hat)),
            "Triton": bench.time_ms(lambda: oemdm_row_loss(logits, target, A, A_hat, backend="triton")),
        }
    print(fmt_table("evaluation (no_grad) loss", ["variant", "ms"], [[k, t] for k, t in ev.items()]))
    results["loss_eval_ms"] = ev

    # Launch-parameter sweep: the forward with gradient is all the work when grad_output ≡ 1.
    gbuf = torch.empty_like(logits)
    x = logits.detach()
    base_cfg = loss_launch_config(n, v)
    sweep = [base_cfg]
    if triton.next_power_of_2(v) <= MAX_TILE:  # the whole-row tile: one HBM read, register-hungry
        for nw in (8, 16, 32):
            for reload in (False, True):
                tile = {"kind": "tile", "BLOCK_R": 1, "BLOCK_V": triton.next_power_of_2(v), "RELOAD": reload}
                sweep.append({**tile, "num_warps": nw})
    for bv in (2048, 4096, 8192, 16384):
        for nw in (4, 8, 16):
            sweep.append({"kind": "chunked", "BLOCK_V": bv, "num_warps": nw})
    srows = []
    for cfg in sweep:
        try:
            t = bench.time_ms(lambda cfg=cfg: triton_row_loss_forward(x, target, A, A_hat, gbuf, **cfg))
        except Exception as e:  # noqa: BLE001 - e.g. out of registers/shared memory for a config
            t = None
            print(f"config {cfg}: failed: {type(e).__name__}: {str(e)[:200]}")
        srows.append([json.dumps(cfg), t, None if t is None else t / floor])
    print(fmt_table("kernel launch sweep (loss + gradient, one launch)", ["config", "ms", "× floor"], srows))
    results["sweep"] = srows


def section_linear(torch, bench: Bench, args: argparse.Namespace, dev, gen, results: dict, floor: float | None = None):
    """Fused linear + loss: time and peak memory vs unfused variants and vs its three matmuls alone."""
    from oemdm_spec.fast.kernels import linear_oemdm_row_loss, oemdm_row_loss

    n, v, d = args.n, args.v, args.d
    dt = torch.bfloat16
    target = torch.randint(0, v, (n,), device=dev, generator=gen)
    A = torch.rand(n, device=dev, generator=gen) * 3 + 0.05
    A_hat = torch.rand(n, device=dev, generator=gen) * 3 + 0.05
    h = (torch.randn(n, d, device=dev, generator=gen) / 4).to(dt).requires_grad_(True)
    W = (torch.randn(v, d, device=dev, generator=gen) / d**0.5).to(dt).requires_grad_(True)

    def lin_step(fn):
        def run():
            h.grad = W.grad = None
            fn().sum().backward()

        return run

    L = torch.empty(n, v, device=dev, dtype=dt)
    G = torch.randn(n, v, device=dev, generator=gen, dtype=torch.float32).to(dt)
    gh, gW = torch.empty_like(h), torch.empty_like(W)
    hd, Wd = h.detach(), W.detach()

    def three_matmuls():
        torch.mm(hd, Wd.t(), out=L)
        torch.mm(G, Wd, out=gh)
        torch.mm(G.t(), hd, out=gW)

    t_mm = bench.time_ms(three_matmuls)
    L = G = gh = gW = None  # free before the variants run
    if bench.cuda:
        torch.cuda.empty_cache()
    flops = 3 * 2 * n * v * d
    compiled_lin = maybe_compile(torch, lambda h, W: eager_loss(h @ W.t(), target, A, A_hat), args)

    row_w = torch.rand(n, device=dev, generator=gen)

    def fused(backend: str, row_weight=None):
        return linear_oemdm_row_loss(
            h, W, None, target, A, A_hat, chunk_size=args.chunk, row_weight=row_weight, backend=backend
        )

    lin_variants = [
        ("fused linear+loss (Triton)", lin_step(lambda: fused("triton"))),
        ("fused linear+loss (Triton), per-row row_weight", lin_step(lambda: fused("triton", row_w))),
        ("unfused: matmul + eager loss", lin_step(lambda: eager_loss(h @ W.t(), target, A, A_hat))),
        ("unfused: torch.compile", lin_step(lambda: compiled_lin(h, W)) if compiled_lin else None),
        ("unfused: matmul + Triton loss", lin_step(lambda: oemdm_row_loss(h @ W.t(), target, A, A_hat))),
        ("fused linear+loss (PyTorch fallback)", lin_step(lambda: fused("torch"))),
    ]  # fmt: skip
    lres: dict[str, dict | None] = {}
    for name, fn in lin_variants:
        lres[name] = None
        if fn is None:
            continue
        try:
            lres[name] = {"ms": bench.time_ms(fn), "peak_bytes": bench.peak_bytes(fn)}
        except Exception as e:  # noqa: BLE001
            print(f"{name}: failed: {e!r}")
    unfused_peak = (lres.get("unfused: matmul + eager loss") or {}).get("peak_bytes")
    lrows = []
    for name, r in lres.items():
        if r is None:
            lrows.append([name, None, None, None, None])
            continue
        pk = r["peak_bytes"]
        lrows.append([
            name, r["ms"], r["ms"] / t_mm, None if pk is None else pk / 2**30,
            None if (pk is None or not unfused_peak) else pk / unfused_peak,
        ])  # fmt: skip
    lrows.append(["three matmuls alone (h·Wᵀ, G·W, Gᵀ·h)", t_mm, 1.0, None, None])
    print(
        fmt_table(
            f"fused linear + loss fwd+bwd, N={n}, d={d}, V={v}, bf16 (matmuls: {flops / t_mm / 1e9:.0f} TFLOP/s)",
            ["variant", "ms", "× matmuls", "peak GiB", "× unfused peak"],
            lrows,
        )
    )
    results["linear"] = {"matmuls_ms": t_mm, **lres}


def section_masking(torch, bench: Bench, args: argparse.Namespace, dev, gen, results: dict, floor: float | None = None):
    """Forward masking at the trainer's shape: Triton vs the PyTorch fallback vs naive PyTorch."""
    from oemdm_spec.fast.kernels import forward_mask

    v = args.v
    B, Lq, K = (4, 64, 2) if args.tiny else (32, 1024, 2)
    xs = torch.randint(0, v, (B, Lq), device=dev, generator=gen)
    ts = torch.rand(B, device=dev, generator=gen) * 0.999 + 1e-3
    ws = torch.rand(B, Lq, device=dev, generator=gen) * 1.3 + 0.05

    def naive():
        u = torch.rand(K, B, Lq, device=dev, generator=gen)
        y = ws * ts.log().unsqueeze(1)
        m = u < y.exp()
        z = torch.where(m, v, xs)
        return z, torch.where(m, y, torch.log1p(-y.exp())).sum(-1)

    def ours(backend: str):
        return lambda: forward_mask(xs, ts, ws, K=K, seed=1, mask_id=v, backend=backend)

    mres = {
        "Triton (Philox, one pass)": bench.time_ms(ours("triton")),
        "PyTorch fallback": bench.time_ms(ours("torch")),
        "naive PyTorch (no validation)": bench.time_ms(naive),
    }
    print(fmt_table(f"forward masking B={B}, L={Lq}, K={K}", ["variant", "ms"], [[k, t] for k, t in mres.items()]))
    results["masking_ms"] = mres


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        return run_check()
    if args.device == "cuda":
        os.environ["TRITON_INTERPRET"] = "0"  # before the kernels are defined (on import)
    sys.path.insert(0, str(ROOT))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --tiny for a smoke test", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    bench = Bench(args.device, args.reps)
    results: dict[str, object] = {
        "device": torch.cuda.get_device_name() if bench.cuda else "cpu",
        "torch": torch.__version__,
        "args": {k: str(a) if isinstance(a, Path) else a for k, a in vars(args).items()},
    }
    print(f"# fast-path kernels on {results['device']}: torch {torch.__version__}, N={args.n}, V={args.v}, d={args.d}")
    gen = torch.Generator(device=dev).manual_seed(0)
    floor = section_floor(torch, bench, args, dev, gen, results)

    for section in (section_loss, section_linear, section_masking):
        section(torch, bench, args, dev, gen, results, floor)
        if bench.cuda:
            torch.cuda.empty_cache()

    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
