"""Training-step throughput on one GPU: the project's MDLM and LoMDM steps beside plain baselines, same process.

    python benchmarks/gpu_step.py                 # GPT-2-small-size DiT, L=1024, batch 32, bf16 autocast
    python benchmarks/gpu_step.py --smoke         # tiny sizes, runs on CPU (checks the script, not speed)

Rows (compare with docs/performance anchors, rerun here side by side):
- baseline MDLM eager: full-vocabulary fp32 log-softmax over every position (the anchor's "MDLM-style, eager");
- baseline MDLM compiled: the same under torch.compile;
- ours MDLM: compiled backbone, logits only at masked rows through the fused linear+loss kernel;
- ours LoMDM (K=2): shared no-grad x pass, one batched pass over both z samples, φ/ψ heads.
MFU = model FLOPs / time / the bf16 matmul rate measured at the start of this run (8192³).
"""

from __future__ import annotations

import argparse
import time

import torch

from oemdm_spec.fast.model import ModelConfig, OeMDM, count_parameters
from oemdm_spec.fast.objectives import draw_step_noise, oemdm_loss


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(dev: torch.device, n: int) -> float:
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    for _ in range(3):
        a @ b
    sync(dev)
    reps = 20 if dev.type == "cuda" else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def time_step(fn, dev: torch.device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU ok)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        V, L, B, nl, d, nh, mm = 101, 64, 4, 2, 64, 4, 512
    else:
        V, L, B, nl, d, nh, mm = 50258, 1024, args.batch, 12, 768, 12, 8192
    peak = matmul_rate(dev, mm)
    print(
        f"device {dev} ({torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'CPU'}); "
        f"measured matmul {peak / 1e12:.1f} TFLOP/s; V={V} L={L} B={B} {nl}x{d}"
    )
    use_compile = dev.type == "cuda" and not args.no_compile
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    x = torch.randint(0, V, (B, L), device=dev)
    rows = []

    def make(typ: str) -> tuple[OeMDM, torch.optim.Optimizer]:
        torch.manual_seed(0)
        m = OeMDM(
            ModelConfig(vocab_size=V, seq_len=L, model_type=typ, n_layer=nl, n_head=nh, d_model=d, cond_dim=128)
        ).to(dev)
        with torch.no_grad():  # realistic (non-zero) output layer
            m.backbone.out.weight.normal_(0, 0.02)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=dev.type == "cuda")
        return m, opt

    def make_step(m: OeMDM, opt: torch.optim.Optimizer, typ: str, mode: str, compiled: bool):
        counter = [0]
        K = 2 if typ == "lomdm" else 1
        if mode == "full":

            def full_loss(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                logits = m.backbone(z).float()
                logp = torch.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1)
                masked = (z == V).float()
                return (-(logp * masked) / t[:, None]).sum(-1).mean() / L

            fn_loss = torch.compile(full_loss) if compiled else full_loss
        elif compiled:
            m.backbone.features = torch.compile(m.backbone.features)  # type: ignore[method-assign]

        def step() -> None:
            nz = draw_step_noise(0, counter[0], global_batch=B, seq_len=L, K=K, t_min=1e-3, device=dev)
            with amp:
                if mode == "full":
                    loss = fn_loss(torch.where(nz.u[0] < nz.t[:, None], V, x), nz.t)
                else:
                    loss = oemdm_loss(m, x, nz, K=K).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            counter[0] += 1

        return step

    for label, typ, mode, compiled in [
        ("baseline MDLM eager (full-vocab fp32 log-softmax)", "mdlm", "full", False),
        ("baseline MDLM compiled", "mdlm", "full", True),
        ("ours MDLM (masked rows, fused linear+loss)", "mdlm", "ours", True),
        ("ours LoMDM K=2", "lomdm", "ours", True),
    ]:
        if compiled and not use_compile:
            if mode == "full":
                continue  # the compiled baseline only makes sense where we compile ours too
            compiled = False
        m, opt = make(typ)
        n_backbone = count_parameters(m.backbone)
        step = make_step(m, opt, typ, mode, compiled)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sec = time_step(step, dev, warmup=3 if compiled else 2, reps=args.reps if not args.smoke else 2)
        tokens = B * L
        # model FLOPs: 6·N·tokens per fwd+bwd pass (+ attention 12·n_layer·L·d per token), as in PaLM's MFU
        per_tok = 6 * n_backbone + 12 * nl * L * d
        flops = per_tok * tokens
        if typ == "lomdm":  # no-grad x pass (1/3) + K=2 z passes + the two one-layer heads
            flops = per_tok * tokens * (1 / 3 + 2) + per_tok / nl * tokens * (1 + 2)
        peak_gb = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        rows.append(
            (label, sec * 1e3, tokens / sec, (tokens * (2 if typ == "lomdm" else 1)) / sec, flops / sec / peak, peak_gb)
        )
        del m, opt
    print(f"\n{'step':<52} {'ms/step':>9} {'x tok/s':>10} {'z tok/s':>10} {'MFU':>6} {'peak GB':>8}")
    for label, ms, tps, ztps, mfu, gb in rows:
        print(f"{label:<52} {ms:>9.1f} {tps:>10,.0f} {ztps:>10,.0f} {100 * mfu:>5.1f}% {gb:>8.1f}")


if __name__ == "__main__":
    main()
