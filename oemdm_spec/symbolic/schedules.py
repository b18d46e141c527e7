r"""Schedules written once as sympy expressions: one source for the proofs and for the numbers.

A :class:`SymbolicSchedule` holds one sympy expression α^i(t) per position (a ``Piecewise`` for the
ε-window schedules of spec §2). From it, sympy derives

- ``one_minus_alpha``  1 − α^i(t), simplified piece by piece (so that the numbers never cancel);
- ``velocity``         A^i(t) = −∂_t α^i / (1 − α^i)  (spec §1 "Velocity"), in closed form;
- ``mass``             ∫ −∂_t α^i over an interval (how much of the unmasking happens there).

:meth:`SymbolicSchedule.numeric` lambdifies the three closed forms to float64 numpy functions, and
:class:`LambdifiedSchedule` wraps them in the torch :class:`~oemdm_spec.reference.schedules.Schedule`
interface, so a schedule derived here can be fed to the reference NELBOs unchanged. The symbolic tests check
that the lambdified forms agree with the hand-written torch classes.

All schedules here are input-free (α does not read u); the input-dependent families (LoMDM, GenMD4) are
treated in :mod:`oemdm_spec.symbolic.lomdm` and :mod:`oemdm_spec.symbolic.genmd4` with symbolic exponents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

__all__ = [
    "t",
    "eps",
    "SymbolicSchedule",
    "mdlm",
    "polynomial",
    "cosine",
    "window",
    "arm",
    "fixed_order",
    "block",
    "window_bounds",
    "LambdifiedSchedule",
]

#: time, 0 < t < 1 (declared positive so that logs and powers simplify)
t = sp.Symbol("t", positive=True)
#: the leakage ε of the window schedules, 0 < ε < 1/2
eps = sp.Symbol("epsilon", positive=True)


def _piecewise_map(expr: sp.Expr, fn: Callable[[sp.Expr], sp.Expr]) -> sp.Expr:
    """Apply ``fn`` to each piece of a Piecewise (or to the expression itself)."""
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(fn(e), c) for e, c in expr.args])
    return fn(expr)


@dataclass(frozen=True)
class SymbolicSchedule:
    """A per-position schedule α^i(t), i = 1..L, as sympy expressions in :data:`t` (spec §1 "Schedules").

    ``kinks`` are the interior points where some α^i is not C¹ (the breakpoints of the Piecewise).
    ``parameters`` are the free symbols other than t (ε, or symbolic exponents) that
    :meth:`numeric` needs values for.
    """

    name: str
    alphas: tuple[sp.Expr, ...]
    kinks: tuple[sp.Rational, ...] = ()
    parameters: tuple[sp.Symbol, ...] = field(default=())

    @property
    def length(self) -> int:
        """L, the number of positions."""
        return len(self.alphas)

    def one_minus_alpha(self) -> tuple[sp.Expr, ...]:
        """1 − α^i(t), simplified piece by piece."""
        return tuple(_piecewise_map(a, lambda e: sp.simplify(1 - e)) for a in self.alphas)

    def rate_density(self) -> tuple[sp.Expr, ...]:
        """−∂_t α^i(t): the density in t of the reverse-time unmasking of position i (its total mass is 1)."""
        return tuple(_piecewise_map(a, lambda e: sp.simplify(-sp.diff(e, t))) for a in self.alphas)

    def velocity(self) -> tuple[sp.Expr, ...]:
        """A^i(t) = −∂_t α^i / (1 − α^i), derived in closed form piece by piece (spec §1 "Velocity")."""
        return tuple(_piecewise_map(a, lambda e: sp.simplify(-sp.diff(e, t) / (1 - e))) for a in self.alphas)

    def mass(self, i: int, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
        """∫_lo^hi −∂_t α^i dt = α^i(lo) − α^i(hi) (position ``i`` is 0-indexed)."""
        a = self.alphas[i]
        return sp.simplify(a.subs(t, lo) - a.subs(t, hi))

    def numeric(self, values: dict[sp.Symbol, float] | None = None) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """Lambdify α, log(1 − α) and A to float64 numpy functions of t (shape (n,) → (n, L)).

        ``values`` gives the parameters (for example ``{eps: 0.1}``). log(1 − α) is lambdified from the
        simplified 1 − α of each piece, so it carries no cancellation error.
        """
        values = dict(values or {})
        missing = [p for p in self.parameters if p not in values]
        if missing:
            raise ValueError(f"{self.name}.numeric: missing values for parameters {missing}")

        def compile_(exprs: Sequence[sp.Expr]) -> Callable[[np.ndarray], np.ndarray]:
            fns = [sp.lambdify(t, sp.sympify(e).subs(values), modules="numpy") for e in exprs]

            def f(tt: np.ndarray) -> np.ndarray:
                tt = np.asarray(tt, dtype=np.float64)
                # numpy's select evaluates every piece everywhere; pieces outside their range may warn.
                with np.errstate(all="ignore"):
                    cols = [np.broadcast_to(np.asarray(fn(tt), dtype=np.float64), tt.shape) for fn in fns]
                return np.stack(cols, axis=-1)

            return f

        log1m = [_piecewise_map(e, sp.log) for e in self.one_minus_alpha()]
        return {"alpha": compile_(self.alphas), "log_one_minus_alpha": compile_(log1m),
                "velocity": compile_(self.velocity())}


def mdlm(length: int, epsilon: sp.Expr | float = 0) -> SymbolicSchedule:
    """MDLM: α = 1 − (1 − ε)t at every position (ε = 0: the linear schedule 1 − t)."""
    e = sp.nsimplify(epsilon)
    params = tuple(sorted(sp.sympify(e).free_symbols, key=str))
    return SymbolicSchedule("mdlm", tuple(1 - (1 - e) * t for _ in range(length)), (), params)


def polynomial(w: Sequence[sp.Expr | float]) -> SymbolicSchedule:
    """Polynomial: α^i = 1 − t^{w_i}; ``w`` may hold sympy symbols (then they are parameters)."""
    ws = [sp.nsimplify(x) for x in w]
    params = tuple(sorted(set().union(*[sp.sympify(x).free_symbols for x in ws]), key=str))
    return SymbolicSchedule("polynomial", tuple(1 - t**x for x in ws), (), params)


def cosine(length: int) -> SymbolicSchedule:
    """Cosine: α = cos(πt/2) at every position."""
    return SymbolicSchedule("cosine", tuple(sp.cos(sp.pi * t / 2) for _ in range(length)))


def window_bounds(k: int, n: int) -> tuple[sp.Rational, sp.Rational]:
    """The active window J_k = [(n − k)/n, (n − k + 1)/n] of window index k ∈ 1..n."""
    return sp.Rational(n - k, n), sp.Rational(n - k + 1, n)


def _window_alpha(k: int, n: int, e: sp.Expr) -> sp.Expr:
    """α for a position of window k of n (spec §2, [reconstructed]): 1 → 1−ε, then s0 → s1 on J_k, ε → 0."""
    start, end = window_bounds(k, n)
    s0 = sp.Integer(1) if k == n else 1 - e
    s1 = sp.Integer(0) if k == 1 else e
    inside = s0 - (s0 - s1) * (n * t - (n - k))
    pieces: list[tuple[sp.Expr, sp.Basic]] = []
    if k < n:
        pieces.append((1 - e * t / start, t < start))
    if k > 1:
        pieces.append((inside, t < end))
        pieces.append((e * (1 - (t - end) / (1 - end)), True))
    else:
        pieces.append((inside, True))
    return pieces[0][0] if len(pieces) == 1 else sp.Piecewise(*pieces)


def window(windows: Sequence[int], n: int, epsilon: sp.Expr | float = eps, name: str = "window") -> SymbolicSchedule:
    """The shared ε-window schedule: position i belongs to window ``windows[i]`` ∈ 1..n."""
    e = sp.nsimplify(epsilon)
    params = tuple(sorted(sp.sympify(e).free_symbols, key=str))
    kinks = tuple(sp.Rational(k, n) for k in range(1, n))
    return SymbolicSchedule(name, tuple(_window_alpha(k, n, e) for k in windows), kinks, params)


def arm(length: int, epsilon: sp.Expr | float = eps) -> SymbolicSchedule:
    """α_arm,ε: position i (1-indexed) is active on I_i = [(L − i)/L, (L − i + 1)/L]."""
    return window(range(1, length + 1), length, epsilon, "arm")


def fixed_order(order: Sequence[int], epsilon: sp.Expr | float = eps) -> SymbolicSchedule:
    """α_arm,ε permuted by π: position ``order[k]`` (0-indexed) is generated (k+1)-th."""
    n = len(order)
    if sorted(order) != list(range(n)):
        raise ValueError(f"fixed_order: order={list(order)!r} is not a permutation of 0..{n - 1}")
    rank = [0] * n
    for k, pos in enumerate(order):
        rank[pos] = k + 1
    return window(rank, n, epsilon, "fixed_order")


def block(length: int, block_size: int, epsilon: sp.Expr | float = eps) -> SymbolicSchedule:
    """α_bd,ε: blocks of size L' = ``block_size``; block b is active on J_b = [(B − b)/B, (B − b + 1)/B]."""
    if block_size < 1 or length % block_size:
        raise ValueError(f"block: block_size={block_size!r} must be a positive divisor of length={length}")
    n = length // block_size
    return window([i // block_size + 1 for i in range(length)], n, epsilon, "block")


class LambdifiedSchedule:
    """The torch :class:`~oemdm_spec.reference.schedules.Schedule` built from a :class:`SymbolicSchedule`.

    Created with :meth:`build` so that importing this module does not import the reference package. The
    closed forms are the lambdified sympy derivations, evaluated in float64.
    """

    @staticmethod
    def build(schedule: SymbolicSchedule, values: dict[sp.Symbol, float] | None = None):  # noqa: ANN205
        """Return an instance of a ``Schedule`` subclass whose α, log(1 − α), A come from ``schedule``."""
        import torch

        from oemdm_spec.reference.schedules import Schedule

        fns = schedule.numeric(values)
        kinks = tuple(float(k) for k in schedule.kinks)

        def call(key: str, tt: torch.Tensor) -> torch.Tensor:
            out = fns[key](tt.detach().cpu().double().numpy())
            return torch.as_tensor(out, dtype=torch.float64)

        class _Lambdified(Schedule):
            name = f"Lambdified[{schedule.name}]"

            def _alpha(self, tt, u):  # noqa: ANN001, ANN202
                return call("alpha", tt)

            def _log_one_minus_alpha(self, tt, u):  # noqa: ANN001, ANN202
                return call("log_one_minus_alpha", tt)

            def _velocity(self, tt, u):  # noqa: ANN001, ANN202
                return call("velocity", tt)

            def kinks(self) -> tuple[float, ...]:
                return kinks

        return _Lambdified(schedule.length)
