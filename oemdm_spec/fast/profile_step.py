"""Where the time of one CPU training step goes, and what ``torch.compile`` of the whole step gives.

    PYTHONPATH=. python -m oemdm_spec.fast.profile_step --models mdlm,lomdm            # breakdown (1 thread)
    PYTHONPATH=. python -m oemdm_spec.fast.profile_step --models mdlm,lomdm --compile  # + dynamo explain,
                                                                                        #   compiled vs eager

Breakdown (tiny preset, fp32, one intra-op thread): wall time of exclusive regions measured with module hooks
(forward pre/post and full-backward pre/post hooks on the leaf modules, so forward and backward are both
counted): attention (the backbone's SelfAttention), MLP (the backbone's MLPs), φ/ψ heads (everything inside
``phi``/``psi``), output head + loss (the fused linear + loss kernels: their GEMMs run in the forward), the
optimiser (AdamW step + zero_grad), data (the step's noise draw and a batch gather), and "other" (embedding,
layer norms, adaLN, masking, RLOO, autograd bookkeeping) = step − the rest. The step is assembled as the
trainer does (``LossModule`` → backward → AdamW), not through the trainer itself.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch

from .config import build_config
from .model import MLP, OeMDM, SelfAttention
from .objectives import LossModule, compile_step, draw_step_noise, n_times_for, samples_for
from .processes import base as objectives  # where the row-loss kernels are called

CATEGORIES = ("attention", "MLP", "φ/ψ heads", "output head + loss", "optimiser", "data", "other")


class Regions:
    """Exclusive wall-time accumulators for non-overlapping regions (one thread: no overlap)."""

    def __init__(self) -> None:
        self.total = dict.fromkeys(CATEGORIES, 0.0)
        self._t0: dict[str, float] = {}

    def start(self, cat: str) -> None:
        self._t0[cat] = time.perf_counter()

    def stop(self, cat: str) -> None:
        t0 = self._t0.pop(cat, None)
        if t0 is not None:
            self.total[cat] += time.perf_counter() - t0

    @contextmanager
    def region(self, cat: str):
        self.start(cat)
        try:
            yield
        finally:
            self.stop(cat)


def _hook(model: OeMDM, reg: Regions) -> list:
    handles = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (SelfAttention, MLP)):
            continue
        in_head = name.startswith(("phi.", "psi."))
        cat = "φ/ψ heads" if in_head else ("attention" if isinstance(mod, SelfAttention) else "MLP")
        handles += [
            mod.register_forward_pre_hook(lambda m, a, cat=cat: reg.start(cat)),
            mod.register_forward_hook(lambda m, a, o, cat=cat: reg.stop(cat)),
            mod.register_full_backward_pre_hook(lambda m, g, cat=cat: reg.start(cat)),
            mod.register_full_backward_hook(lambda m, gi, go, cat=cat: reg.stop(cat)),
        ]
    # the heads' own layer norm / scalar head: small, timed with the heads
    for head_name in ("phi", "psi"):
        head = getattr(model, head_name, None)
        if head is not None:
            for sub in (head.norm, head.head):
                handles += [sub.register_forward_pre_hook(lambda m, a: reg.start("φ/ψ heads")),
                            sub.register_forward_hook(lambda m, a, o: reg.stop("φ/ψ heads"))]
    return handles


def _patch_loss(reg: Regions):
    """Time the fused output-head + loss calls of objectives (forward; their backward only rescales)."""
    orig = (objectives.linear_oemdm_row_loss, objectives.oemdm_row_loss)

    def wrap(fn):
        def timed(*a, **k):
            with reg.region("output head + loss"):
                return fn(*a, **k)

        return timed

    objectives.linear_oemdm_row_loss, objectives.oemdm_row_loss = wrap(orig[0]), wrap(orig[1])
    return lambda: setattr(objectives, "linear_oemdm_row_loss", orig[0]) or setattr(
        objectives, "oemdm_row_loss", orig[1])


def make_step(model_type: str, *, compiled: bool = False, reg: Regions | None = None, seed: int = 0,
              overrides: dict | None = None):
    """(step(), loss_module, example inputs) for the tiny preset on CPU, fp32 (``overrides``: config keys)."""
    cfg = build_config({"preset": "tiny", "model": model_type, "seed": seed, **(overrides or {})})
    torch.manual_seed(seed)
    vocab = 65  # the embedded corpus' character vocabulary
    model = OeMDM(cfg.model_config(vocab))
    with torch.no_grad():
        model.backbone.out.weight.normal_(0, 0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss_mod = LossModule(model, cfg.K)
    fwd = compile_step(LossModule(model, cfg.K)) if compiled else loss_mod  # the trainer's --compile step
    K = samples_for(model, cfg.K)
    B, L = cfg.batch_size, cfg.seq_len
    corpus = torch.randint(0, vocab, (200_000,), generator=torch.Generator().manual_seed(seed))
    counter = [0]
    reg = reg or Regions()

    def step() -> float:
        with reg.region("data"):
            starts = torch.randint(0, corpus.numel() - L, (B,))
            x = corpus[starts[:, None] + torch.arange(L)]
            nz = draw_step_noise(cfg.seed, counter[0], global_batch=B, seq_len=L, K=K, t_min=cfg.t_min,
                                 n_times=n_times_for(model))
        res = fwd(x, nz.t, nz.u)
        res.loss.backward()
        with reg.region("optimiser"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        counter[0] += 1
        return float(res.loss.detach())

    x0 = corpus[:B * L].view(B, L)
    nz0 = draw_step_noise(cfg.seed, 0, global_batch=B, seq_len=L, K=K, t_min=cfg.t_min, n_times=n_times_for(model))
    return step, loss_mod, (x0, nz0.t, nz0.u), model


def breakdown(model_type: str, steps: int = 10, warmup: int = 3) -> dict[str, float]:
    reg = Regions()
    step, _, _, model = make_step(model_type, reg=reg)
    handles = _hook(model, reg)
    unpatch = _patch_loss(reg)
    try:
        for _ in range(warmup):
            step()
        reg.total = dict.fromkeys(CATEGORIES, 0.0)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    finally:
        unpatch()
        for h in handles:
            h.remove()
    out = {k: v / steps for k, v in reg.total.items()}
    out["other"] = wall - sum(v for k, v in out.items() if k != "other")
    out["step"] = wall
    return out


def plain_step_time(model_type: str, compiled: bool, steps: int = 10, warmup: int = 3) -> tuple[float, float]:
    """(seconds per step, seconds for the warm-up incl. compilation) without any hooks."""
    step, _, _, _ = make_step(model_type, compiled=compiled)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    t_warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t1 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t1)
    times.sort()
    return times[len(times) // 2], t_warm


def explain(model_type: str) -> str:
    _, loss_mod, inputs, _ = make_step(model_type)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):  # as compile_step sets it
        ex = torch._dynamo.explain(loss_mod)(*inputs)
    lines = [f"{model_type}: {ex.graph_count} graphs, {ex.graph_break_count} graph breaks"]
    for br in ex.break_reasons:
        where = br.user_stack[-1] if br.user_stack else None
        loc = f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else "?"
        lines.append(f"  - {loc}: {str(br.reason).splitlines()[0][:160]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mdlm,lomdm")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also dynamo explain + compiled vs eager step time")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), tiny preset, fp32, CPU")
    res = {m: breakdown(m, args.steps) for m in models}
    head = "| region | " + " | ".join(f"{m} ms | {m} %" for m in models) + " |"
    print(head + "\n|" + "---|" * (1 + 2 * len(models)))
    for k in (*CATEGORIES, "step"):
        cells = " | ".join(f"{1e3 * res[m][k]:.1f} | {100 * res[m][k] / res[m]['step']:.0f}" for m in models)
        print(f"| {k} | {cells} |")
    if "mdlm" in res and "lomdm" in res:
        print(f"LoMDM / MDLM step-time ratio: {res['lomdm']['step'] / res['mdlm']['step']:.2f} (paper: ≈1.7×)")
    if args.compile:
        for m in models:
            print(explain(m))
        print("| model | eager ms/step | compiled ms/step | compiled/eager | warm-up incl. compile s |")
        print("|---|---|---|---|---|")
        for m in models:
            e, _ = plain_step_time(m, False, args.steps)
            c, w = plain_step_time(m, True, args.steps)
            print(f"| {m} | {1e3 * e:.1f} | {1e3 * c:.1f} | {c / e:.2f} | {w:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
