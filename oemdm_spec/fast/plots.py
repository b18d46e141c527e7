"""PNG plots (matplotlib, Agg backend): training curves, generation-order heatmaps, comparison curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a numeric CSV log; a cell that is not a number raises ValueError naming the file, line, column."""
    rows = []
    with open(path) as f:
        for line, r in enumerate(csv.DictReader(f), start=2):
            row = {}
            for k, v in r.items():
                if k is None or not isinstance(v, str):  # extra cells of a torn row: ignored
                    continue
                try:
                    row[k] = float(v) if v != "" else math.nan
                except ValueError:
                    raise ValueError(f"{path}: line {line}, column {k!r}: not a number: {v[:40]!r}") from None
            rows.append(row)
    return rows


def plot_training(log_csv: str | Path, out_png: str | Path, title: str = "") -> Path:
    rows = read_csv(log_csv)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r.get("step", math.nan) for r in rows]
    axes[0].plot(steps, [r.get("nelbo", math.nan) for r in rows], label="train NELBO (batch estimate)", alpha=0.7)
    val = [(r["step"], r["val_nelbo"]) for r in rows if not math.isnan(r.get("val_nelbo", math.nan))]
    if val:
        axes[0].plot(*zip(*val, strict=True), "o-", label="validation NELBO bound")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("nats / token")
    axes[0].legend()
    axes[0].set_title(title or "training")
    axes[1].plot(steps, [r.get("lr", math.nan) for r in rows])
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("learning rate")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_order_heatmap(order: torch.Tensor, out_png: str | Path, texts: list[str] | None = None,
                       title: str = "generation order") -> Path:
    """Rows = samples, columns = positions, colour = step at which the position was revealed."""
    o = order.double().clone()
    o[o < 0] = float("nan")
    fig, ax = plt.subplots(figsize=(min(18, 2 + o.shape[1] * 0.12), 1 + 0.5 * o.shape[0]))
    im = ax.imshow(o.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="unmask step (early = dark)")
    ax.set_xlabel("position")
    ax.set_ylabel("sample")
    ax.set_title(title)
    if texts is not None and o.shape[1] <= 160:
        for r, text in enumerate(texts):
            for c, ch in enumerate(text[: o.shape[1]]):
                ax.text(c, r, ch if ch.isprintable() else "·", ha="center", va="center", fontsize=5, color="w")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return Path(out_png)


def plot_order_stats(stats_csv: str | Path, out_png: str | Path) -> Path | None:
    rows = read_csv(stats_csv)
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    st = [r["step"] for r in rows]
    for key, lab in (("w_fwd", "w_φ (forward)"), ("w_rev", "w_ψ (reverse)")):
        if f"{key}_mean" in rows[0]:
            axes[0].plot(st, [r[f"{key}_mean"] for r in rows], label=f"{lab} mean")
            axes[0].fill_between(st, [r[f"{key}_min"] for r in rows], [r[f"{key}_max"] for r in rows], alpha=0.2)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("w")
    axes[0].legend()
    for key, lab in (("corr_fwd_conf", "corr(w_φ, confidence)"), ("corr_rev_conf", "corr(w_ψ, confidence)")):
        if key in rows[0]:
            axes[1].plot(st, [r[key] for r in rows], label=lab)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("Pearson r at masked positions")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_compare(curves: dict[str, list[tuple[int, float, float]]], out_png: str | Path,
                 unit: str = "token") -> Path:
    """curves: model → [(step, wall seconds, val NELBO)]; two panels: vs step and vs wall-clock."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, pts in curves.items():
        if not pts:
            continue
        s, w, v = zip(*pts, strict=True)
        axes[0].plot(s, v, "o-", label=name, ms=3)
        axes[1].plot(w, v, "o-", label=name, ms=3)
    for ax, xl in zip(axes, ("step", "wall-clock (s)"), strict=True):
        ax.set_xlabel(xl)
        ax.set_ylabel(f"validation NELBO bound (nats/{unit})")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
