"""Tables for docs/lomdm.md from the study's JSONL outputs (benchmarks/study/*.jsonl).

    python benchmarks/study/summarize.py benchmarks/study/main.jsonl benchmarks/study/size2.jsonl \
        benchmarks/study/rloo.jsonl

Per model: mean over seeds of the validation NELBO in bits per sequence (± standard error over seeds, n − 1
denominator; with one seed, the Monte-Carlo SE of the bound), its excess over the exact floor N bits, the paired
difference to MDLM on the same training seed (mean ± SE over seeds), and the order metrics; the sweep's
``sw-`` rows in their own table (paired to LoMDM, the constant-w control and MDLM); rloo_variance.py's rows.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def fmt(m: float, se: float, d: int = 2) -> str:
    return f"{m:.{d}f}" if math.isnan(se) else f"{m:.{d}f} ± {se:.{d}f}"


def latents_table(rows: list[dict]) -> str:
    by = defaultdict(dict)
    for r in rows:
        by[r["label"]][r["seed"]] = r
    ref = by.get("mdlm", {})
    out = ["| model | seeds | NELBO bits/seq | excess over floor | Δ vs MDLM (paired) | valid samples | obs. after "
           "all its latents | w latents / w obs. | ψ std (all masked) |", "|" + "---|" * 9]
    for label, runs in by.items():
        seeds = sorted(runs)
        bits = [runs[s]["bits_seq"] for s in seeds]
        m, se = mean_se(bits)
        if len(seeds) == 1:
            se = runs[seeds[0]].get("bits_seq_se", float("nan"))
        floor = runs[seeds[0]]["floor_bits"]
        paired = [runs[s]["bits_seq"] - ref[s]["bits_seq"] for s in seeds if s in ref]
        dm, dse = mean_se(paired) if paired else (float("nan"), float("nan"))
        d = "—" if label == "mdlm" or not paired else fmt(dm, dse) + (f" (n={len(paired)})")

        def avg(key: str, runs=runs, seeds=seeds) -> str:
            vals = [runs[s][key] for s in seeds if key in runs[s]]
            return f"{sum(vals) / len(vals):.3f}" if vals else "—"

        def sci(key: str, runs=runs, seeds=seeds) -> str:
            vals = [runs[s][key] for s in seeds if key in runs[s]]
            return f"{sum(vals) / len(vals):.1e}" if vals else "—"

        w = (f"{avg('w_latents')} / {avg('w_obs')}" if any("w_latents" in runs[s] for s in seeds) else "—")
        out.append(f"| {label} | {','.join(map(str, seeds))} | {fmt(m, se)} | {fmt(m - floor, se)} | {d} | "
                   f"{avg('valid_frac')} | {avg('obs_after_latents')} | {w} | {sci('psi_allmasked_std')} |")
    return "\n".join(out)


PAIRS = (("lomdm", "lomdm-const"), ("lomdm-log", "lomdm-const"), ("lomdm-hp", "lomdm"), ("lomdm-const", "mdlm"),
         ("lomdm", "mdlm"), ("oracle-lf", "mdlm"), ("oracle-lf", "oracle-of"), ("oracle-lf", "lomdm"),
         ("ar-easy", "oracle-lf"), ("ar-random", "ar-easy"), ("ar-random", "mdlm"))


def paired_table(rows: list[dict]) -> str:
    """Paired differences (bits/sequence) on the same training seeds: mean ± SE over seeds."""
    by = defaultdict(dict)
    for r in rows:
        by[r["label"]][r["seed"]] = r
    out = ["| difference | seeds | Δ bits/seq |", "|---|---|---|"]
    for a, b in PAIRS:
        seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
        if not seeds:
            continue
        m, se = mean_se([by[a][s]["bits_seq"] - by[b][s]["bits_seq"] for s in seeds])
        out.append(f"| {a} − {b} | {','.join(map(str, seeds))} | {fmt(m, se)} |")
    return "\n".join(out)


SWEEP_CONTROLS = {"sw-K=4": "sw-K=4,c2=0", "sw-K=8": "sw-K=8,c2=0", "sw-c1=1,c2=0.95": "sw-c1=1,c2=0"}


def sweep_table(rows: list[dict]) -> str:
    """The order-learning sweep (labels ``sw-...``): paired differences to LoMDM, the constant-w control and
    MDLM on the same training seeds, and the order metrics."""
    by = defaultdict(dict)
    for r in rows:
        by[r["label"]][r["seed"]] = r
    refs = ("lomdm", "lomdm-const", "control", "mdlm")
    out = ["| variant | seeds | NELBO bits/seq | " + " | ".join(
        "Δ vs the same at c2 = 0" if b == "control" else f"Δ vs {b}" for b in refs)
           + " | obs. after all its latents | w latents / w obs. |", "|" + "---|" * (5 + len(refs))]
    for label in sorted(lab for lab in by if lab.startswith("sw-")):
        runs = by[label]
        seeds = sorted(runs)
        m, se = mean_se([runs[s]["bits_seq"] for s in seeds])
        if len(seeds) == 1:
            se = runs[seeds[0]].get("bits_seq_se", float("nan"))
        cells = []
        for b in refs:
            if b == "control":  # the same settings with a constant w (c2 = 0): what the order adds
                b = SWEEP_CONTROLS.get(label, "" if label.endswith("c2=0") else "lomdm-const")
            d = [runs[s]["bits_seq"] - by[b][s]["bits_seq"] for s in seeds if s in by.get(b, {})]
            cells.append(fmt(*mean_se(d)) if d else "—")

        def avg(key: str, runs=runs, seeds=seeds) -> str:
            vals = [runs[s][key] for s in seeds if key in runs[s]]
            return f"{sum(vals) / len(vals):.3f}" if vals else "—"

        out.append(f"| {label[3:]} | {','.join(map(str, seeds))} | {fmt(m, se)} | " + " | ".join(cells)
                   + f" | {avg('obs_after_latents')} | {avg('w_latents')} / {avg('w_obs')} |")
    return "\n".join(out)


def rloo_table(rows: list[dict]) -> str:
    """rloo_variance.py: per model state, variant and parameter group, the gradient's signal-to-noise."""
    out = ["| model state | variant | group | live params | ‖mean g‖ | √tr Σ (one draw) | SNR of one draw | "
           "cos(halves) | coords with |t| > 2 |", "|" + "---|" * 9]
    # the variants use the same draws, so full = pathwise + score draw by draw: the cosine of the two parts'
    # mean gradients follows from the three mean norms
    for r in rows:
        if r["n_params"] == r["n_zero_grad"]:
            continue  # ψ's gradient is exactly 0 at initialisation (ŵ = w) and in the score-only variant
        name = r["model"].split("-task")[0]
        out.append(f"| {name} | {r['variant']} | {r['group']} | {r['n_params'] - r['n_zero_grad']} | "
                   f"{r['mean_norm']:.2e} | {r['noise_norm']:.2e} | {r['snr1']:.3f} | {r['cos_halves']:.2f} | "
                   f"{r['frac_t2']:.3f} |")
    norms = {(r["model"], r["variant"]): r["mean_norm"] for r in rows if r["group"] == "phi"}
    out.append("")
    for m in dict.fromkeys(r["model"] for r in rows):
        if all((m, v) in norms for v in ("full", "pathwise", "score")) and norms[(m, "pathwise")] > 0:
            f, p, s = (norms[(m, v)] for v in ("full", "pathwise", "score"))
            out.append(f"φ, {m.split('-task')[0]}: cosine of the pathwise and score parts' mean gradients "
                       f"{(f * f - p * p - s * s) / (2 * p * s):.2f}")
    return "\n".join(out)


def sudoku_table(rows: list[dict]) -> str:
    by = defaultdict(list)
    for r in rows:
        by[r["label"]].append(r)
    samplers = ("first-hitting", "topk", "confidence", "margin")
    out = ["| model | seeds | NELBO nats/token | " + " | ".join(f"solved ({s})" for s in samplers) + " |",
           "|" + "---|" * (3 + len(samplers))]
    for label, runs in by.items():
        cells = []
        for s in samplers:
            accs = [r[f"acc_{s}"] for r in runs]
            m, se = mean_se(accs)
            if len(runs) == 1:
                se = runs[0][f"se_{s}"]
            cells.append(fmt(m, se, 3))
        nm, nse = mean_se([r["nelbo"] for r in runs])
        out.append(f"| {label} | {','.join(str(r['seed']) for r in runs)} | {fmt(nm, nse, 3)} | "
                   + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    rows = [json.loads(line) for p in sys.argv[1:] for line in open(p) if line.strip()]
    lat = [r for r in rows if "bits_seq" in r]
    sud = [r for r in rows if "acc_topk" in r]
    def key(r: dict) -> tuple[str, int]:
        return r["data"].replace("latents-perm", "latents").split(",order=")[0], r["steps"]

    for data, steps in sorted({key(r) for r in lat}):
        sub = [r for r in lat if key(r) == (data, steps)]
        print(f"\n{data}, {steps} steps\n")
        for r in sub:  # the AR rows carry their order in the label
            if "latents-perm" in r["data"] and not r["label"].startswith("ar-"):
                r["label"] = "ar-" + r["data"].split("order=")[1]
        print(latents_table([r for r in sub if not r["label"].startswith("sw-")]))
        print()
        print(paired_table(sub))
        if any(r["label"].startswith("sw-") for r in sub):
            print(f"\nsweep ({data}, {steps} steps)\n")
            print(sweep_table(sub))
    if sud:
        print("\nsudoku:box=2\n")
        print(sudoku_table(sud))
    rloo = [r for r in rows if "snr1" in r]
    if rloo:
        print(f"\nRLOO gradient signal-to-noise ({rloo[0]['draws']} draws per row)\n")
        print(rloo_table(rloo))


if __name__ == "__main__":
    main()
