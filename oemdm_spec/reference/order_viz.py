r"""Pictures of a generation order: which position was unmasked at which step (spec §3 "Order semantics").

- :func:`order_heatmap` writes a PNG: rows = samples, columns = positions (optionally re-ordered, e.g. by the
  hidden chain index), colour = the step at which the position was revealed (dark = early).
- :func:`order_text` renders samples as text, each token shaded by its step: with ``ansi=True`` a 24-bit
  background grey (early = dark), otherwise a block character █▓▒░ (early = █) in front of each token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["order_heatmap", "order_text", "SHADES"]

SHADES = "█▓▒░"


def _check_order(order: Tensor) -> Tensor:
    if order.dim() != 2:
        raise ValueError(f"order must be (n_samples, L), got shape {tuple(order.shape)}")
    return order.detach().cpu().long()


def order_heatmap(
    order: Tensor,
    path: str | Path,
    *,
    columns: Sequence[int] | Tensor | None = None,
    column_label: str = "position",
    title: str = "generation order (colour = unmask step)",
) -> Path:
    """Write a PNG heatmap of ``order`` (n_samples, L) to ``path`` and return the path.

    ``columns`` re-orders the positions (e.g. ``task.perm`` to lay them out along the hidden chain); the
    ``column_label`` names the axis. Positions fixed by the caller (step −1) are drawn as step −1.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = _check_order(order)
    if columns is not None:
        cols = torch.as_tensor(columns, dtype=torch.long)
        if sorted(cols.tolist()) != list(range(order.shape[1])):
            raise ValueError(f"columns must be a permutation of 0..{order.shape[1] - 1}, got {cols.tolist()}")
        order = order[:, cols]
    n, length = order.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * length + 1.5), max(2.5, 0.12 * n + 1.2)))
    image = ax.imshow(order.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel(column_label)
    ax.set_ylabel("sample")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="unmask step")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def order_text(
    tokens: Tensor,
    order: Tensor,
    *,
    itos: Callable[[int], str] | Sequence[str] | None = None,
    ansi: bool = False,
    separator: str = " ",
) -> str:
    """One line per sample; each token shaded by the step at which it was revealed (early = dark).

    ``itos`` maps a token id to text (a callable or a list); default ``str(id)``.
    """
    order = _check_order(order)
    if tokens.shape != order.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and order {tuple(order.shape)} must have the same shape")
    if itos is None:
        name: Callable[[int], str] = str
    elif callable(itos):
        name = itos
    else:
        table = list(itos)
        name = lambda i: table[i]
    lines = []
    length = order.shape[1]
    for row_tokens, row_order in zip(tokens.tolist(), order.tolist(), strict=True):
        span = max(1, length - 1)
        parts = []
        for tok, step in zip(row_tokens, row_order, strict=True):
            frac = min(1.0, max(0.0, step / span))  # 0 = first, 1 = last (fixed positions: 0)
            if ansi:
                grey = int(40 + 200 * frac)
                fg = 255 if grey < 140 else 0
                parts.append(f"\x1b[48;2;{grey};{grey};{grey}m\x1b[38;2;{fg};{fg};{fg}m{name(tok)}\x1b[0m")
            else:
                parts.append(SHADES[min(len(SHADES) - 1, int(frac * len(SHADES)))] + name(tok))
        lines.append(separator.join(parts))
    return "\n".join(lines)
