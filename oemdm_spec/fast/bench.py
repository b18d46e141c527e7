"""GPU benchmarks of the fast path, one parser: ``oemdm bench`` (also ``python -m oemdm_spec.fast.bench``).

    oemdm bench --out DIR                 # the acceptance run (default; < 8 min on one H100/H200)
    oemdm bench --smoke --out DIR         # the same script at tiny sizes on CPU (Triton interpreter, < 60 s)
    oemdm bench --check                   # kernel property tests on the GPU (needs a source checkout)

Needs only torch, triton, numpy and safetensors (no pyro, no test extra). Sections, each recorded even when it
fails (its error message goes into the JSON and the table instead of stopping the run):

1. ``env``: card, driver, CUDA, torch and triton versions;
2. ``gate`` (correctness, first): Triton bf16 loss and logit gradient vs eager fp32 at N × V (V unpadded and
   padded to a multiple of 64), and the fused in-place linear path vs the unfused one on a row slice. Max
   relative errors are printed; **the run stops here when the gate fails** (exit code 1);
3. ``loss``: bytes floor (copy of the logits), eager, ``torch.compile``, Triton default, and a trimmed launch
   sweep (chunked BLOCK_V ∈ {2048, 4096, 8192} × num_warps ∈ {4, 8}), for V and the padded V;
4. ``linear``: fused linear + loss with a bias against its three matmuls alone, peak memory against unfused;
5. ``step``: the compiled training step of the ``gpt2-small`` preset for mdlm, lomdm (K = 2) and ar: tokens/s
   and z-tokens/s.

Every timing is reported as p10 / p50 / p90 over the repetitions (CUDA events on a GPU). Output:
``DIR/acceptance.json`` and a summary table printed last (format: docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_CHILD_ENV = "OEMDM_BENCH_CHILD"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oemdm bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--acceptance", action="store_true", help="the acceptance run (the default)")
    mode.add_argument("--check", action="store_true", help="kernel property tests on the GPU (source checkout)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU under the Triton interpreter")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for acceptance.json")
    p.add_argument("--sections", default="gate,loss,linear,step",
                   help="comma-separated subset of gate,loss,linear,step (env always runs)")
    p.add_argument("--reps", type=int, default=0, help="timed repetitions (0: 20 on a GPU, 2 in smoke mode)")
    p.add_argument("--compile", choices=["auto", "yes", "no"], default="auto",
                   help="torch.compile baselines and steps (auto: on a GPU, not in smoke mode)")
    p.add_argument("--step-compile", choices=["yes", "no"], default="yes",
                   help="also time the whole-step compile (--compile step) of mdlm and lomdm (when compiling)")
    p.add_argument("--n", type=int, default=0, help="masked rows N (0: 32768; smoke 32)")
    p.add_argument("--v", type=int, default=0, help="vocabulary V (0: 50258; smoke 1001)")
    p.add_argument("--step-batch", type=int, default=0, help="training-step batch (0: 32; smoke 2)")
    return p


# ----------------------------------------------------------------------------------------------------------
# timing


class Timer:
    """p10 / p50 / p90 in ms of a callable: CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, torch_mod, cuda: bool, reps: int, warmup: int) -> None:
        self.torch, self.cuda, self.reps, self.warmup = torch_mod, cuda, reps, warmup

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def __call__(self, fn, reps: int | None = None) -> dict[str, float]:
        for _ in range(self.warmup):
            fn()
        self.sync()
        times = []
        for _ in range(reps or self.reps):
            if self.cuda:
                a = self.torch.cuda.Event(enable_timing=True)
                b = self.torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return percentiles(times)

    def peak_bytes(self, fn) -> float | None:
        if not self.cuda:
            return None
        self.sync()
        self.torch.cuda.reset_peak_memory_stats()
        base = self.torch.cuda.memory_allocated()
        fn()
        self.sync()
        return float(self.torch.cuda.max_memory_allocated() - base)


def percentiles(times: list[float]) -> dict[str, float]:
    """p10 / p50 / p90 with linear interpolation (numpy's default), plus the number of samples."""
    s = sorted(times)

    def q(f: float) -> float:
        x = f * (len(s) - 1)
        lo = math.floor(x)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (x - lo)

    return {"p10": q(0.1), "p50": q(0.5), "p90": q(0.9), "n": len(s)}


# ----------------------------------------------------------------------------------------------------------
# sections


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.torch = torch
        self.smoke = args.smoke
        self.dev = torch.device("cpu" if args.smoke else "cuda")
        self.cuda = self.dev.type == "cuda"
        self.n = args.n or (32 if args.smoke else 32768)
        self.v = args.v or (1001 if args.smoke else 50258)
        self.vp = -(-self.v // 64) * 64
        self.d = 32 if args.smoke else 768
        self.slice_rows = 16 if args.smoke else 4096
        self.partial: Any = lambda name, value: None  # run_acceptance: write the rows measured so far
        self.step_batch = args.step_batch or (2 if args.smoke else 32)
        self.compile = args.compile == "yes" or (args.compile == "auto" and self.cuda)
        self.step_compile = args.step_compile == "yes"
        reps = args.reps or (2 if args.smoke else 20)
        self.timer = Timer(torch, self.cuda, reps, warmup=1 if args.smoke else 3)
        self.gen = torch.Generator(device=self.dev).manual_seed(0)

    def empty_cache(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()


def eager_loss(logits, target, A, A_hat):
    """The anchors' baseline formula: fp32 log-softmax, gather, weight (+ the velocity terms)."""
    import torch

    log_px = torch.log_softmax(logits.float(), dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
    return -A * log_px + A * (A.log() - A_hat.log()) - (A - A_hat)


def _loss_problem(c: Ctx, v_real: int, v_cols: int):
    """bf16 logits (N, v_cols) whose columns ≥ v_real are −inf (the padded head), targets in [0, v_real)."""
    torch = c.torch
    logits = (2.0 * torch.randn(c.n, v_cols, device=c.dev, generator=c.gen)).to(torch.bfloat16)
    if v_cols > v_real:
        logits[:, v_real:] = -math.inf
    target = torch.randint(0, v_real, (c.n,), device=c.dev, generator=c.gen)
    A = torch.rand(c.n, device=c.dev, generator=c.gen) * 3 + 0.05
    A_hat = torch.rand(c.n, device=c.dev, generator=c.gen) * 3 + 0.05
    return logits, target, A, A_hat


def _rel(a, b) -> float:
    """max |a − b| / max |b| over finite reference entries (normwise relative error)."""
    fin = b.isfinite()
    num = (a.double() - b.double()).abs()[fin].max().item() if fin.any() else 0.0
    den = b.double().abs()[fin].max().item() if fin.any() else 1.0
    return num / max(den, 1e-30)


# Gate thresholds (normwise relative errors). Loss: fp32 arithmetic on the same bf16 logits on both sides, a
# few fp32 ulps times log V: 1e-4. Logit gradient: stored in bf16 (rounding 2**-9 ≈ 2e-3): 1e-2. Fused vs
# unfused linear: bf16 GEMMs in both, rounding of the logits and of the accumulated weight gradient: 2e-2.
GATE_TOL = {"loss": 1e-4, "grad": 1e-2, "linear": 2e-2}


def section_gate(c: Ctx) -> dict[str, Any]:
    torch = c.torch
    from oemdm_spec.fast.kernels import linear_oemdm_row_loss, oemdm_row_loss

    checks: dict[str, Any] = {}
    for label, vc in (("V", c.v), ("V padded", c.vp)):
        logits, target, A, A_hat = _loss_problem(c, c.v, vc)
        x = logits.clone().requires_grad_(True)
        loss = oemdm_row_loss(x, target, A, A_hat, backend="triton")
        loss.sum().backward()
        ref_x = logits.float().requires_grad_(True)
        ref = eager_loss(ref_x, target, A, A_hat)
        ref.sum().backward()
        checks[f"loss {label}"] = {"rel_err": _rel(loss, ref.detach()), "tol": GATE_TOL["loss"]}
        checks[f"grad {label}"] = {"rel_err": _rel(x.grad.float(), ref_x.grad), "tol": GATE_TOL["grad"]}
        if vc > c.v:
            pad_grad = x.grad[:, c.v:].float().abs().max().item()
            checks[f"pad-column grad {label}"] = {"rel_err": pad_grad, "tol": 0.0}
        del x, ref_x, loss, ref, logits
        c.empty_cache()

    n = c.slice_rows
    h = (torch.randn(n, c.d, device=c.dev, generator=c.gen) / 4).to(torch.bfloat16)
    W = (torch.randn(c.vp, c.d, device=c.dev, generator=c.gen) / c.d**0.5).to(torch.bfloat16)
    b = torch.randn(c.vp, device=c.dev, generator=c.gen).to(torch.bfloat16)
    b[c.v:] = -math.inf
    target = torch.randint(0, c.v, (n,), device=c.dev, generator=c.gen)
    A = torch.rand(n, device=c.dev, generator=c.gen) * 3 + 0.05
    A_hat = torch.rand(n, device=c.dev, generator=c.gen) * 3 + 0.05
    grads = []
    for fused in (True, False):
        hh, WW, bb = (t.clone().requires_grad_(True) for t in (h, W, b))
        if fused:  # the kernel writes the gradient over its own logits buffer
            out = linear_oemdm_row_loss(hh, WW, bb, target, A, A_hat, backend="triton")
        else:
            out = oemdm_row_loss(torch.addmm(bb, hh, WW.t()), target, A, A_hat, backend="triton")
        out.sum().backward()
        grads.append((out.detach(), hh.grad, WW.grad, bb.grad[: c.v]))
    for name, a, r in zip(("loss", "grad hidden", "grad weight", "grad bias"), grads[0], grads[1], strict=True):
        checks[f"fused in-place linear vs unfused: {name}"] = {"rel_err": _rel(a.float(), r.float()),
                                                               "tol": GATE_TOL["linear"]}
    ok = all(v["rel_err"] <= v["tol"] for v in checks.values())
    for k, v in checks.items():
        print(f"  gate {k:<46} max rel err {v['rel_err']:.3e} (tol {v['tol']:.0e})", flush=True)
    return {"passed": ok, "checks": checks}


def section_loss(c: Ctx) -> dict[str, Any]:
    torch = c.torch
    compiled = torch.compile(eager_loss) if c.compile else None
    out = {label: _loss_block(c, vc, compiled) for label, vc in (("V", c.v), ("V padded", c.vp))}
    return out


def _loss_block(c: Ctx, vc: int, compiled) -> dict[str, Any]:
    """One loss table (V columns = vc): floor, eager, compile, Triton default, sweep (memory freed on return)."""
    torch = c.torch
    from oemdm_spec.fast.kernels import oemdm_row_loss
    from oemdm_spec.fast.kernels._triton import loss_launch_config, triton_row_loss_forward

    logits, target, A, A_hat = _loss_problem(c, c.v, vc)
    rows: dict[str, Any] = {}
    dst = torch.empty_like(logits)
    rows["bytes floor (copy)"] = c.timer(lambda: dst.copy_(logits))
    dst = None
    x = logits.requires_grad_(True)

    def step(fn):
        def run():
            x.grad = None
            fn(x, target, A, A_hat).sum().backward()

        return run

    variants = [("eager fp32", step(eager_loss)),
                ("torch.compile", step(compiled) if compiled else "skipped (no compile)"),
                ("Triton default", step(lambda *a: oemdm_row_loss(*a, backend="triton")))]
    for name, fn in variants:
        rows[name] = _guard(lambda fn=fn: fn if isinstance(fn, str) else c.timer(fn))
    if "p50" in rows["Triton default"]:
        rows["Triton default"]["config"] = loss_launch_config(c.n, vc)
    xd = x.detach()
    gbuf = torch.empty_like(xd)
    sweep: dict[str, Any] = {}
    for bv in (2048, 4096, 8192):
        for nw in (4, 8):
            cfg = {"kind": "chunked", "BLOCK_V": bv, "num_warps": nw}
            launch = lambda cfg=cfg: triton_row_loss_forward(xd, target, A, A_hat, gbuf, **cfg)
            sweep[json.dumps(cfg)] = _guard(lambda launch=launch: c.timer(launch))
    timed = {k: r for k, r in sweep.items() if "p50" in r}
    if timed:
        best = min(timed, key=lambda k: timed[k]["p50"])
        rows["Triton best of sweep"] = {**timed[best], "config": json.loads(best)}
    else:
        rows["Triton best of sweep"] = {"error": "every sweep configuration failed"}
    floor = rows["bytes floor (copy)"].get("p50")
    for r in rows.values():
        if "p50" in r and floor:
            r["x_floor"] = r["p50"] / floor
    return {"rows": rows, "sweep": sweep, "n": c.n, "v_cols": vc}


def section_linear(c: Ctx) -> dict[str, Any]:
    torch = c.torch
    from oemdm_spec.fast.kernels import linear_oemdm_row_loss

    n, d, v = c.n, c.d, c.vp
    dt = torch.bfloat16
    target = torch.randint(0, c.v, (n,), device=c.dev, generator=c.gen)
    A = torch.rand(n, device=c.dev, generator=c.gen) * 3 + 0.05
    A_hat = torch.rand(n, device=c.dev, generator=c.gen) * 3 + 0.05
    h = (torch.randn(n, d, device=c.dev, generator=c.gen) / 4).to(dt).requires_grad_(True)
    W = (torch.randn(v, d, device=c.dev, generator=c.gen) / d**0.5).to(dt).requires_grad_(True)
    braw = torch.zeros(v, device=c.dev)
    braw[c.v:] = -math.inf
    b = braw.to(dt).requires_grad_(True)
    rows: dict[str, Any] = {}
    L = torch.empty(n, v, device=c.dev, dtype=dt)
    G = torch.randn(n, v, device=c.dev, generator=c.gen).to(dt)
    gh, gW = torch.empty_like(h), torch.empty_like(W)
    hd, Wd = h.detach(), W.detach()

    def three_matmuls():
        torch.mm(hd, Wd.t(), out=L)
        torch.mm(G, Wd, out=gh)
        torch.mm(G.t(), hd, out=gW)

    rows["three matmuls alone"] = _guard(lambda: c.timer(three_matmuls))
    L = G = gh = gW = None  # free before the variants run
    c.empty_cache()

    def run(fn):
        def go():
            h.grad = W.grad = b.grad = None
            fn().sum().backward()

        return go

    fused = run(lambda: linear_oemdm_row_loss(h, W, b, target, A, A_hat, backend="triton"))
    unfused = run(lambda: eager_loss(torch.addmm(b, h, W.t()), target, A, A_hat))
    for name, fn in (("fused linear+loss (Triton, bias)", fused), ("unfused: addmm + eager fp32 loss", unfused)):
        rows[name] = _guard(lambda fn=fn: {**c.timer(fn), "peak_bytes": c.timer.peak_bytes(fn)})
    mm = rows["three matmuls alone"].get("p50")
    up = rows["unfused: addmm + eager fp32 loss"].get("peak_bytes")
    for r in rows.values():
        if "p50" in r and mm:
            r["x_matmuls"] = r["p50"] / mm
        if r.get("peak_bytes") and up:
            r["x_unfused_peak"] = r["peak_bytes"] / up
    return {"rows": rows, "n": n, "d": d, "v_cols": v}


def _train_step(cfg, device, vocab_size: int = 50258):
    """One optimiser step of the public training path, for timing: returns (step(), x tokens, z tokens).

    The ONE place that knows how the fast path's step is assembled (build_config → OeMDM → the loss module →
    AdamW); re-point it here when the trainer's objects move."""
    import torch

    from oemdm_spec.fast.model import OeMDM
    from oemdm_spec.fast.objectives import LossModule, compile_step, draw_step_noise, n_times_for, samples_for

    cuda = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    model = OeMDM(cfg.model_config(vocab_size)).to(device)
    with torch.no_grad():  # a realistic (non-zero) output layer: uniform logits would be a special case
        model.backbone.out.weight.normal_(0, 0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=cuda)
    if cfg.compile == "yes":
        model.backbone.features = torch.compile(model.backbone.features)  # type: ignore[method-assign]
    loss_mod = LossModule(model, cfg.K)
    if cfg.compile == "step":
        compile_step(loss_mod)  # the whole loss forward + backward, one graph (the trainer's --compile step)
    K = samples_for(model, cfg.K)
    B, L = cfg.batch_size, cfg.seq_len
    x = torch.randint(0, vocab_size, (B, L), device=device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda)
    counter = [0]

    def step() -> None:
        nz = draw_step_noise(cfg.seed, counter[0], global_batch=B, seq_len=L, K=K, t_min=cfg.t_min,
                             n_times=n_times_for(model), device=device)
        with autocast:
            res = loss_mod(x, nz.t, nz.u, False, nz.seed)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        counter[0] += 1

    z_tokens = B * L * K  # K = the process's masks per sequence (1 for AR)
    return step, B * L, z_tokens


def section_step(c: Ctx) -> dict[str, Any]:
    torch = c.torch
    from oemdm_spec.fast import build_config

    rows: dict[str, Any] = {}
    runs = [(typ, "yes" if c.compile else "no") for typ in ("mdlm", "lomdm", "ar")]
    if c.compile and c.step_compile:  # the whole step in one graph, next to the compiled backbone
        runs += [(typ, "step") for typ in ("mdlm", "lomdm")]
    for typ, mode in runs:
        def one(typ=typ, mode=mode):
            over: dict[str, Any] = {"model": typ, "K": 2, "compile": mode}
            if c.smoke:
                over |= {"preset": "tiny", "seq_len": 16, "n_layer": 1, "d_model": 32, "n_head": 2, "cond_dim": 16}
            else:
                over |= {"preset": "gpt2-small"}
            over["batch_size"] = c.step_batch
            cfg = build_config(over)
            step, tok, ztok = _train_step(cfg, c.dev, c.v)  # GPT-2: V = 50258 (padded head: 50304 rows)
            if c.cuda:
                torch.cuda.reset_peak_memory_stats()
            t = c.timer(step, reps=max(2, c.timer.reps // 2))
            r = {**t, "tokens_per_s": tok / (t["p50"] / 1e3), "z_tokens_per_s": ztok / (t["p50"] / 1e3),
                 "batch": cfg.batch_size, "seq_len": cfg.seq_len,
                 "compiled": {"yes": "backbone", "step": "whole step"}.get(cfg.compile, "no")}
            if c.cuda:
                r["peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            return r

        rows[f"{typ}{' K=2' if typ == 'lomdm' else ''}{' (whole step)' if mode == 'step' else ''}"] = _guard(one)
        c.empty_cache()
        c.partial("step", {"rows": rows})  # the slowest section: keep each row as it comes
    if "p50" in rows.get("mdlm", {}) and "p50" in rows.get("lomdm K=2", {}):
        rows["lomdm/mdlm step-time ratio"] = {"ratio": rows["lomdm K=2"]["p50"] / rows["mdlm"]["p50"]}
    return {"rows": rows}


def _guard(fn) -> dict[str, Any]:
    """Run one measurement; a failure becomes {"error": message} instead of stopping the script."""
    try:
        r = fn()
        return r if isinstance(r, dict) else {"skipped": str(r)}
    except Exception as e:  # noqa: BLE001 - the point is to record it and carry on
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def section_env(c: Ctx) -> dict[str, Any]:
    torch = c.torch
    import triton

    env: dict[str, Any] = {"torch": torch.__version__, "triton": triton.__version__,
                           "python": platform.python_version(), "cuda_runtime": torch.version.cuda,
                           "device": str(c.dev),
                           "triton_interpret": os.environ.get("TRITON_INTERPRET", "0")}
    if c.cuda:
        env["card"] = torch.cuda.get_device_name()
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001
            env["driver"] = f"unknown ({type(e).__name__})"
    else:
        env["card"], env["driver"] = f"CPU ({platform.processor() or platform.machine()})", None
    return env


# ----------------------------------------------------------------------------------------------------------
# the summary table


def summary_rows(results: dict[str, Any]) -> list[list[str]]:
    """[section, item, p10, p50, p90 (ms), figure of merit, status] for every measurement."""
    out = []

    def fmt(x: Any, spec: str = ".3g") -> str:
        return "" if x is None else format(x, spec)

    def add(section: str, item: str, r: dict[str, Any], merit: str = "") -> None:
        status = ("FAILED: " + r["error"]) if "error" in r else r.get("skipped", "ok")
        out.append([section, item, fmt(r.get("p10")), fmt(r.get("p50")), fmt(r.get("p90")), merit, status])

    s = results["sections"]
    for sec in ("gate", "loss", "linear", "step"):
        r = s.get(sec)
        if r is None:
            continue
        if "error" in r:
            add(sec, "(section)", r)
            continue
        if sec == "gate":
            for k, ch in r["checks"].items():
                ok = ch["rel_err"] <= ch["tol"]
                out.append([sec, k, "", "", "", f"rel err {ch['rel_err']:.2e} ≤ {ch['tol']:.0e}",
                            "ok" if ok else "FAILED"])
        elif sec == "loss":
            for label, block in r.items():
                for k, row in block["rows"].items():
                    add(sec, f"{label}: {k}", row, f"{row['x_floor']:.2f}× floor" if "x_floor" in row else "")
        elif sec == "linear":
            for k, row in r["rows"].items():
                merit = " ".join(x for x in (
                    f"{row['x_matmuls']:.2f}× matmuls" if "x_matmuls" in row else "",
                    f"{row['x_unfused_peak']:.2f}× unfused peak" if "x_unfused_peak" in row else "") if x)
                add(sec, k, row, merit)
        else:
            for k, row in r["rows"].items():
                if "ratio" in row:
                    out.append([sec, k, "", "", "", f"{row['ratio']:.2f}×", "ok"])
                    continue
                merit = (f"{row['tokens_per_s']:,.0f} tok/s, {row['z_tokens_per_s']:,.0f} z-tok/s"
                         if "tokens_per_s" in row else "")
                add(sec, k, row, merit)
    return out


def format_table(results: dict[str, Any]) -> str:
    env = results["env"]
    head = ["section", "item", "p10 ms", "p50 ms", "p90 ms", "figure", "status"]
    lines = [f"## oemdm bench acceptance: {env.get('card')} · driver {env.get('driver')} · torch {env.get('torch')}"
             f" · triton {env.get('triton')} · {'smoke' if results['smoke'] else 'full'}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in summary_rows(results)]
    lines.append(f"gate: {'passed' if results.get('gate_passed') else 'FAILED or not run'}; "
                 f"wall {results['wall_s']:.1f} s; JSON: {results['json']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# entry points


def run_acceptance(args: argparse.Namespace) -> int:
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("oemdm bench: no CUDA device (use --smoke for the CPU smoke run)", file=sys.stderr)
        return 2
    if args.smoke:
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    c = Ctx(args)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in ("gate", "loss", "linear", "step")]
    if bad:
        print(f"oemdm bench: --sections must be a subset of gate,loss,linear,step, got {bad}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "acceptance.json"
    results: dict[str, Any] = {"smoke": bool(args.smoke), "n": c.n, "v": c.v, "v_padded": c.vp,
                               "env": _guard(lambda: section_env(c)), "sections": {}, "json": str(path)}
    def save(partial: bool) -> None:
        """Write what is measured so far (atomically): a run killed by a time limit still leaves its JSON."""
        results["wall_s"] = time.perf_counter() - t0
        results["complete"] = not partial
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        tmp.replace(path)

    def partial(name: str, value: dict[str, Any]) -> None:
        results["sections"][name] = {**value, "partial": True}
        save(partial=True)

    c.partial = partial
    rc = 0
    for name in wanted:
        fn = {"gate": section_gate, "loss": section_loss, "linear": section_linear, "step": section_step}[name]
        print(f"== {name} ==", flush=True)
        try:
            results["sections"][name] = fn(c)
        except Exception as e:  # noqa: BLE001 - record and carry on
            traceback.print_exc()
            results["sections"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        c.empty_cache()
        save(partial=True)
        if name == "gate":
            results["gate_passed"] = bool(results["sections"]["gate"].get("passed"))
            if not results["gate_passed"]:
                print("oemdm bench: the correctness gate FAILED; no timings are taken", file=sys.stderr)
                rc = 1
                break
    save(partial=False)
    print(format_table(results), flush=True)
    return rc


def run_check() -> int:
    """The kernel property tests with the GPU as device (bf16 and fp32): needs the repository's proofs_tests."""
    root = Path(__file__).resolve().parents[2]
    tests = sorted(str(p) for p in (root / "proofs_tests").glob("test_kernels_*.py"))
    if not tests:
        print(f"oemdm bench --check: no proofs_tests under {root} (run it from a source checkout)", file=sys.stderr)
        return 2
    env = {**os.environ, "OEMDM_TEST_DEVICE": "cuda", "OEMDM_TEST_DTYPES": "float32,bfloat16",
           "TRITON_INTERPRET": "0", "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], env=env, cwd=root)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.check:
        return run_check()
    # @triton.jit reads TRITON_INTERPRET when the kernels are defined (first import of the kernels package):
    # the smoke run needs the interpreter, the GPU run must not have it. If this process already imported the
    # kernels the other way, rerun in a fresh interpreter with the right setting.
    want = "1" if args.smoke else "0"
    imported = "oemdm_spec.fast.kernels._backend" in sys.modules
    if imported:
        from oemdm_spec.fast.kernels._backend import TRITON_INTERPRETED

        mismatch = TRITON_INTERPRETED != (want == "1")
    else:
        mismatch = os.environ.get("TRITON_INTERPRET", "0") not in (("1",) if want == "1" else ("", "0"))
    if mismatch:
        if os.environ.get(_CHILD_ENV):
            print("oemdm bench: could not set TRITON_INTERPRET for the kernels", file=sys.stderr)
            return 2
        env = {**os.environ, "TRITON_INTERPRET": want, _CHILD_ENV: "1"}
        return subprocess.call([sys.executable, "-m", "oemdm_spec.fast.bench", *argv], env=env)
    os.environ["TRITON_INTERPRET"] = want
    return run_acceptance(args)


if __name__ == "__main__":
    raise SystemExit(main())
