r"""LoMDM: learning the generation order jointly with the denoiser (spec §3), readable reference.

One module, one equation per function:

- :func:`normsig` and :func:`exponent` — the scheduler exponents w = c1 + c2·NormSig(v) (the paper's form, the
  default) or the sharper log-space option w = c1·exp(R·tanh(c2·(v − mean v)/R)) (ours, spec §3 "How sharp").
- :class:`Backbone` — a small bidirectional, time-agnostic transformer: logits over the real tokens (SUBS)
  and final hidden states f(z).
- :class:`SchedulerHead` — g_φ / g_ψ: one transformer layer of the backbone's width plus a scalar head, reading
  *detached* backbone features (of x for φ, of z_t for ψ).
- :class:`LoMDM` — backbone + heads + configuration; ``w_phi(x)``, ``w_psi(z)``, the forward/reverse schedules
  as :class:`~oemdm_spec.reference.schedules.InputPolynomialSchedule` objects.
- :class:`ClampedUniformTime`, :class:`LogTimeMixture` — where the time of each training/evaluation sample
  comes from. The clamped one is the paper's training recipe (t ∈ [t_min, 1]) and is **not a bound** for
  w < 1 (spec §4); the log-time one samples u = −log t from a proper density on [0, ∞) and is an unbiased
  estimate of the whole bound.
- :func:`rloo_surrogate`, :func:`lomdm_loss` — the REINFORCE leave-one-out surrogate (Kool et al. 2019) for any
  K ≥ 2 samples of z_t per (x, t), with the spec's gradient routing, and the reported NELBO split into
  L_main and L_velocity (the surrogate term excluded).
- :func:`exact_objective_at_t` — E_{q_φ(z_t|x)}[L] at one t by enumerating all masks (differentiable in φ):
  the ground truth of the estimator tests.
- :func:`sample` — the order sampler: first-hitting (exact in continuous time) or ancestral on a grid, driven by
  w_ψ(z_t), with a top-k-by-w_ψ variant; it returns the generation order.

Time is carried as log-time u = −log t throughout: in u every masked position has the constant hazard w
(A dt = w du), P(z^i masked | x) = e^{−w u}, and log(1 − α) = −w u exactly, so nothing is formed by
subtraction (spec §4). Per masked position, in u-units:

    L_main = −w_φ · log x_θ[x^i],     L_velocity = w_φ log(w_φ/w_ψ) − w_φ + w_ψ

which are :func:`~oemdm_spec.reference.terms.l_main` and :func:`~oemdm_spec.reference.terms.l_velocity`
with A = w_φ, Â = w_ψ (the t-form of spec §3 times dt/du = t).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .elbo import enumerate_masks
from .sampling import SampleResult, ancestral_sample, first_hitting_sample, power_grid
from .schedules import InputPolynomialSchedule
from .terms import l_main, l_velocity

__all__ = [
    "PARAMETRISATIONS",
    "normsig",
    "exponent",
    "exponent_range",
    "LoMDMConfig",
    "TransformerLayer",
    "Backbone",
    "SchedulerHead",
    "LoMDM",
    "ClampedUniformTime",
    "LogTimeMixture",
    "forward_log_prob",
    "sample_masks",
    "position_terms",
    "rloo_surrogate",
    "LoMDMLoss",
    "lomdm_loss",
    "exact_objective_at_t",
    "sample",
]

PARAMETRISATIONS = ("normsig", "logspace")


# ---------------------------------------------------------------------------------------------------------
# exponents
# ---------------------------------------------------------------------------------------------------------
def _real_mask(v: Tensor, pad_mask: Tensor | None) -> Tensor:
    """Bool (..., L): True at real (non-padding) positions. ``pad_mask`` is True at padding."""
    if pad_mask is None:
        return torch.ones_like(v, dtype=torch.bool)
    if pad_mask.shape != v.shape:
        raise ValueError(f"pad_mask must have the shape of the scores {tuple(v.shape)}, got {tuple(pad_mask.shape)}")
    real = ~pad_mask.bool()
    if bool((real.sum(-1) == 0).any()):
        raise ValueError("pad_mask: every sequence needs at least one real (non-padding) position")
    return real


def _masked_mean(v: Tensor, real: Tensor) -> Tensor:
    """Mean of v over the real positions, (..., 1)."""
    zero = torch.zeros((), dtype=v.dtype, device=v.device)
    return torch.where(real, v, zero).sum(-1, keepdim=True) / real.sum(-1, keepdim=True).to(v.dtype)


def normsig(v: Tensor, pad_mask: Tensor | None = None) -> Tensor:
    r"""NormSig(v)_i = σ(v_i) − mean_j σ(v_j), the mean over real, non-padding positions (spec §3).

    Padding positions get 0. The result has zero mean over the real positions and lies in (−1, 1); more
    precisely in (−(1 − 1/n), 1 − 1/n) for n real positions, whatever v is (σ ∈ [0, 1] even when it
    saturates in floating point, and the i-th term enters its own mean with weight 1/n).
    """
    real = _real_mask(v, pad_mask)
    s = torch.sigmoid(v)
    out = s - _masked_mean(s, real)
    return torch.where(real, out, torch.zeros_like(out))


def _check_constants(c1: float, c2: float, parametrisation: str, log_range: float) -> None:
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}")
    if not (math.isfinite(c1) and math.isfinite(c2)):
        raise ValueError(f"c1 and c2 must be finite, got c1={c1!r}, c2={c2!r}")
    if c2 < 0:
        raise ValueError(f"c2 must be >= 0 (c2 = 0 is a fixed polynomial schedule), got c2={c2!r}")
    if parametrisation == "normsig" and c1 <= c2:
        raise ValueError(
            f"c1 must be > c2 so that w = c1 + c2·NormSig stays > 0 (NormSig ∈ (−1, 1)), got c1={c1!r}, c2={c2!r}"
        )
    if parametrisation == "logspace":
        if c1 <= 0:
            raise ValueError(f"c1 must be > 0 in the log-space parametrisation (it is the centre of w), got c1={c1!r}")
        if not (math.isfinite(log_range) and log_range > 0):
            raise ValueError(f"log_range must be finite and > 0, got log_range={log_range!r}")


def exponent(
    v: Tensor,
    c1: float = 0.7,
    c2: float = 0.65,
    *,
    parametrisation: str = "normsig",
    log_range: float = math.log(30.0),
    pad_mask: Tensor | None = None,
) -> Tensor:
    r"""The scheduler exponent w(v) ∈ (w_min, w_max)^L from head scores v (..., L).

    - ``"normsig"`` (the paper's, default; spec §3): w = c1 + c2·NormSig(v) ∈ (c1 − c2, c1 + c2). The mean of w
      over the real positions is always c1, so the order law (Plackett–Luce with weights w) can only be a
      soft bias: the largest weight ratio is (c1 + c2)/(c1 − c2) and ≈ 2.7 per step is out of reach.
    - ``"logspace"`` (ours, optional; spec §3 "How sharp can the learned order be?"): with centred scores
      d = v − mean v, log w = log c1 + R·tanh(c2·d/R), so w ∈ (c1 e^{−R}, c1 e^{R}) (R = ``log_range``; the
      tanh is a smooth clamp, ≈ c1·exp(c2·d) while |c2·d| ≪ R). The geometric mean of w is ≈ c1, and weights
      can fall geometrically along an order, so the order can approach a permutation.

    ``c2 = 0`` gives w ≡ c1 in both forms (a fixed polynomial schedule; (1, 0) is MDLM). Padding positions
    get w = c1 (they are never masked by the caller; the value only has to be positive).
    """
    _check_constants(float(c1), float(c2), parametrisation, float(log_range))
    real = _real_mask(v, pad_mask)
    if parametrisation == "normsig":
        w = c1 + c2 * normsig(v, pad_mask)
    else:
        d = v - _masked_mean(v, real)
        w = c1 * torch.exp(log_range * torch.tanh(c2 * d / log_range))
    return torch.where(real, w, torch.full_like(w, c1))


def exponent_range(c1: float, c2: float, parametrisation: str = "normsig", log_range: float = math.log(30.0)):
    """The open interval (w_min, w_max) that :func:`exponent` can reach, for choosing time densities."""
    _check_constants(float(c1), float(c2), parametrisation, float(log_range))
    if parametrisation == "normsig":
        return c1 - c2, c1 + c2
    if c2 == 0:
        return c1, c1
    return c1 * math.exp(-log_range), c1 * math.exp(log_range)


# ---------------------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoMDMConfig:
    """Everything that defines a LoMDM model. (c1, c2) = (1, 0) is MDLM; c2 = 0 a fixed polynomial schedule."""

    vocab_size: int
    length: int
    width: int = 32
    n_layers: int = 2
    n_heads: int = 4
    c1: float = 0.7
    c2: float = 0.65
    parametrisation: str = "normsig"
    log_range: float = math.log(30.0)
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        for name in ("vocab_size", "length", "width", "n_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LoMDMConfig: {name} must be a positive int, got {name}={value!r}")
        if not isinstance(self.n_layers, int) or self.n_layers < 0:
            raise ValueError(f"LoMDMConfig: n_layers must be an int >= 0, got n_layers={self.n_layers!r}")
        if self.width % self.n_heads:
            raise ValueError(f"LoMDMConfig: width={self.width} must be divisible by n_heads={self.n_heads}")
        _check_constants(float(self.c1), float(self.c2), self.parametrisation, float(self.log_range))

    @property
    def w_range(self) -> tuple[float, float]:
        return exponent_range(self.c1, self.c2, self.parametrisation, self.log_range)


class TransformerLayer(nn.Module):
    """One pre-norm bidirectional transformer layer (attention + GELU MLP), no dropout, written out for clarity.

    ``pad_mask`` (B, L), True at padding, removes padding keys from every attention row.
    """

    def __init__(self, width: int, n_heads: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(width, dtype=dtype)
        self.qkv = nn.Linear(width, 3 * width, dtype=dtype)
        self.proj = nn.Linear(width, width, dtype=dtype)
        self.norm2 = nn.LayerNorm(width, dtype=dtype)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width, dtype=dtype), nn.GELU(), nn.Linear(4 * width, width, dtype=dtype)
        )

    def forward(self, h: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        b, length, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, length, 3, self.n_heads, width // self.n_heads).unbind(2)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (B, heads, L, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        att = torch.softmax(scores, -1) @ v
        h = h + self.proj(att.transpose(1, 2).reshape(b, length, width))
        return h + self.mlp(self.norm2(h))


def _layer(width: int, n_heads: int, dtype: torch.dtype) -> TransformerLayer:
    return TransformerLayer(width, n_heads, dtype)


class Backbone(nn.Module):
    """Bidirectional, time-agnostic transformer over z ∈ {0..V}^L (V = mask id).

    ``forward(z) -> (logits (B, L, V), features (B, L, width))``: logits over the real tokens only (SUBS: the
    mask id receives no mass) and the final hidden states f(z) that the scheduler heads read.
    """

    def __init__(self, config: LoMDMConfig) -> None:
        super().__init__()
        c = config
        self.vocab_size = c.vocab_size
        self.embed = nn.Embedding(c.vocab_size + 1, c.width, dtype=c.dtype)
        self.pos = nn.Parameter(0.02 * torch.randn(c.length, c.width, dtype=c.dtype))
        self.layers = nn.ModuleList([_layer(c.width, c.n_heads, c.dtype) for _ in range(c.n_layers)])
        self.norm = nn.LayerNorm(c.width, dtype=c.dtype)
        self.out = nn.Linear(c.width, c.vocab_size, dtype=c.dtype)

    def forward(self, z: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.embed(z.long()) + self.pos
        for layer in self.layers:
            h = layer(h, pad_mask)
        h = self.norm(h)
        return self.out(h), h


class SchedulerHead(nn.Module):
    """g_φ or g_ψ: one transformer layer of the backbone's width plus a scalar head → scores v (B, L).

    It is fed *detached* features; the detaching is done by :class:`LoMDM`, which owns the routing.
    """

    def __init__(self, config: LoMDMConfig) -> None:
        super().__init__()
        self.layer = _layer(config.width, config.n_heads, config.dtype)
        self.norm = nn.LayerNorm(config.width, dtype=config.dtype)
        self.head = nn.Linear(config.width, 1, dtype=config.dtype)

    def forward(self, features: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        return self.head(self.norm(self.layer(features, pad_mask))).squeeze(-1)


class LoMDM(nn.Module):
    r"""The LoMDM model of spec §3: a shared backbone (θ) and two scheduler heads (φ forward, ψ reverse).

    - ``model(z, t)`` is the denoiser (any ``t``; it is ignored — time-agnostic).
    - ``w_phi(x)``: w_φ(x) from a *no-grad* backbone pass on x (θ gets nothing from φ's losses).
    - ``w_psi_from_features(f)``: w_ψ from features that the caller detached; ``w_psi(z)`` runs the pass.
    - ``forward_schedule()`` / ``reverse_schedule()``: α_φ(x, t) = 1 − t^{w_φ(x)}, α̂_ψ(z_t, t) = 1 − t^{w_ψ(z_t)}
      as reference :class:`InputPolynomialSchedule` objects (float64, no grad), for the generic NELBO code.
    """

    def __init__(self, config: LoMDMConfig, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.config = config
        self.backbone = Backbone(config)
        self.phi = SchedulerHead(config)
        self.psi = SchedulerHead(config)

    # -- the denoiser -------------------------------------------------------------------------------------
    def forward(self, z: Tensor, t: Tensor | None = None) -> Tensor:
        return self.backbone(z)[0]

    # -- exponents ----------------------------------------------------------------------------------------
    def _w(self, head: SchedulerHead, features: Tensor, pad_mask: Tensor | None) -> Tensor:
        c = self.config
        if c.c2 == 0:  # w ≡ c1: the heads cannot move it, so they are not evaluated (same value, no cost)
            return torch.full(features.shape[:-1], float(c.c1), dtype=features.dtype, device=features.device)
        v = head(features, pad_mask)
        return exponent(v, c.c1, c.c2, parametrisation=c.parametrisation, log_range=c.log_range, pad_mask=pad_mask)

    def w_phi(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """w_φ(x) (B, L): g_φ on stop-grad backbone features of the clean x."""
        with torch.no_grad():
            _, h = self.backbone(x, pad_mask)
        return self._w(self.phi, h, pad_mask)

    def w_psi_from_features(self, features: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """w_ψ from backbone features of z_t; they are detached here so that θ learns nothing from L_velocity."""
        return self._w(self.psi, features.detach(), pad_mask)

    def w_psi(self, z: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """w_ψ(z_t) (B, L) with its own backbone pass."""
        with torch.no_grad():
            _, h = self.backbone(z, pad_mask)
        return self.w_psi_from_features(h, pad_mask)

    def forward_schedule(self) -> InputPolynomialSchedule:
        """α_φ(x, t) = 1 − t^{w_φ(x)} as a reference schedule (float64, no grad)."""
        return InputPolynomialSchedule(_no_grad64(self.w_phi), self.config.length)

    def reverse_schedule(self) -> InputPolynomialSchedule:
        """α̂_ψ(z_t, t) = 1 − t^{w_ψ(z_t)} as a reference schedule (float64, no grad, cached on the last z)."""
        return InputPolynomialSchedule(_cached(_no_grad64(self.w_psi)), self.config.length)


def _no_grad64(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def wrapped(u: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(u.long()).double()

    return wrapped


def _cached(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Reuse the previous result when called again on an equal z (the ancestral sampler asks twice per step)."""
    last: dict[str, Tensor] = {}

    def wrapped(u: Tensor) -> Tensor:
        if "z" in last and last["z"].shape == u.shape and torch.equal(last["z"], u):
            return last["w"]
        w = fn(u)
        last["z"], last["w"] = u.clone(), w
        return w

    return wrapped


# ---------------------------------------------------------------------------------------------------------
# time densities (log-time u = −log t)
# ---------------------------------------------------------------------------------------------------------
def _stratified(n: int, generator: torch.Generator | None) -> Tensor:
    """(j + U_j)/n, j = 0..n−1, in float64 (stratified uniforms)."""
    return (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n


@dataclass(frozen=True)
class ClampedUniformTime:
    r"""t ~ U[t_min, 1], stratified over the batch (the paper's training recipe; spec §3 step 1).

    Returns u = −log t and the weight 1/p(u) = (1 − t_min)/t, so that weight × (u-integrand) estimates
    ∫_{t_min}^1 of the bound. **Not a bound when w < 1** (spec §4): the mass below t_min is dropped.
    """

    t_min: float = 1e-3
    is_bound = False

    def __post_init__(self) -> None:
        if not (0.0 < self.t_min < 1.0):
            raise ValueError(f"ClampedUniformTime: t_min must lie in (0, 1), got t_min={self.t_min!r}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t = self.t_min + (1.0 - self.t_min) * _stratified(n, generator)
        return -torch.log(t), (1.0 - self.t_min) / t


@dataclass(frozen=True)
class LogTimeMixture:
    r"""u = −log t from the proper density p(u) = mean_j λ_j e^{−λ_j u} on [0, ∞) (spec §4).

    weight(u) = 1/p(u). The estimate weight × (u-integrand) is unbiased for the *whole* bound. The u-integrand
    decays like e^{−w_min u}, so the variance is finite iff min λ < 2·w_min; :meth:`for_range` takes
    λ log-spaced over [w_min, w_max]. ``rates=(1.0,)`` is exactly t ~ U(0, 1] (u ~ Exp(1)).
    Stratified jointly over the component and its quantile.
    """

    rates: tuple[float, ...] = (1.0,)
    is_bound = True

    def __post_init__(self) -> None:
        if len(self.rates) == 0 or any(not (math.isfinite(r) and r > 0) for r in self.rates):
            raise ValueError(f"LogTimeMixture: rates must be a non-empty tuple of finite positives, got {self.rates!r}")

    @classmethod
    def for_range(cls, w_min: float, w_max: float, n: int = 4) -> LogTimeMixture:
        if not (0 < w_min <= w_max):
            raise ValueError(f"LogTimeMixture.for_range: need 0 < w_min <= w_max, got ({w_min!r}, {w_max!r})")
        if w_min == w_max:
            return cls((float(w_min),))
        return cls(tuple(float(r) for r in torch.logspace(math.log10(w_min), math.log10(w_max), n).tolist()))

    def log_density(self, u: Tensor) -> Tensor:
        lam = torch.tensor(self.rates, dtype=torch.float64)
        return torch.logsumexp(torch.log(lam) - lam * u.unsqueeze(-1), -1) - math.log(len(self.rates))

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r = _stratified(n, generator) * len(self.rates)
        comp = r.floor().long().clamp_max(len(self.rates) - 1)
        # q > 0 keeps u > 0: at u = 0 an unmasked position has log q = −inf and a NaN gradient, even under where
        q = (r - comp).clamp(1e-300, 1.0 - 1e-16)
        lam = torch.tensor(self.rates, dtype=torch.float64)[comp]
        u = -torch.log1p(-q) / lam
        return u, torch.exp(-self.log_density(u))


# ---------------------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------------------
def forward_log_prob(masked: Tensor, w: Tensor, u: Tensor, pad_mask: Tensor | None = None) -> Tensor:
    r"""log q_φ(z_t | x) = Σ_i [masked_i · w^i log t + (1 − masked_i) · log(1 − t^{w^i})]  (spec §3), in log space.

    With log t = −u: masked contributes −w u, unmasked log(−expm1(−w u)). ``masked`` and ``w`` are (..., L),
    ``u`` broadcasts against ``w.shape[:-1]``. Padding positions contribute nothing.
    """
    wu = w * u.to(w.dtype).unsqueeze(-1)
    per_pos = torch.where(masked, -wu, torch.log(-torch.expm1(-wu)))
    if pad_mask is not None:
        per_pos = torch.where(pad_mask, torch.zeros_like(per_pos), per_pos)
    return per_pos.sum(-1)


def sample_masks(
    w: Tensor, u: Tensor, n: int, generator: torch.Generator | None = None, pad_mask: Tensor | None = None
) -> Tensor:
    """n masks per row: (B, n, L) bool, P(masked_i) = t^{w_i} = e^{−w_i u}, drawn with w detached."""
    p = torch.exp(-w.detach().double() * u.double().unsqueeze(-1))
    draws = torch.rand(w.shape[0], n, w.shape[-1], generator=generator, dtype=torch.float64)
    masked = draws < p.unsqueeze(1)
    if pad_mask is not None:
        masked = masked & ~pad_mask.unsqueeze(1)
    return masked


def position_terms(log_px: Tensor, w_phi: Tensor, w_psi: Tensor, masked: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-sequence Σ_i masked_i of L_main = −w_φ log x_θ[x^i] and L_velocity = w_φ log(w_φ/w_ψ) − w_φ + w_ψ.

    These are the u-integrands (nats per unit log-time); multiply by 1/p(u) for an estimate of the bound.
    """
    main = l_main(log_px, w_phi)
    vel = l_velocity(w_phi, w_psi)
    zero = torch.zeros((), dtype=main.dtype, device=main.device)
    return torch.where(masked, main, zero).sum(-1), torch.where(masked, vel, zero).sum(-1)


def rloo_surrogate(losses: Tensor, log_q: Tensor, *, score_term: bool = True) -> Tensor:
    r"""REINFORCE leave-one-out surrogate per (x, t): (..., K) → (...)   (spec §3, Kool et al. 2019).

        surrogate = mean_k L_k + (1/K) Σ_k sg(L_k − mean_{j≠k} L_j) · log q_φ(z_k | x)

    Its gradient is an unbiased estimate of ∇ E_q[L]. Its *value* includes the score term, so it is not the
    NELBO; report mean_k L_k (``LoMDMLoss.nelbo``). K = 2 gives ½(L1 + L2) + ½·sg(L1 − L2)(log q1 − log q2) (GenMD4).
    ``score_term=False`` keeps only the pathwise part mean_k L_k: the naive, biased gradient.
    """
    k = losses.shape[-1]
    if k < 2:
        raise ValueError(f"rloo_surrogate: the leave-one-out baseline needs K >= 2 samples, got K={k}")
    if log_q.shape != losses.shape:
        raise ValueError(f"rloo_surrogate: log_q {tuple(log_q.shape)} must match losses {tuple(losses.shape)}")
    mean = losses.mean(-1)
    if not score_term:
        return mean
    detached = losses.detach()
    baseline = (detached.sum(-1, keepdim=True) - detached) / (k - 1)
    return mean + ((detached - baseline) * log_q).mean(-1)


@dataclass
class LoMDMLoss:
    """One training batch. ``surrogate`` is the scalar to backpropagate; ``main``/``velocity`` are per sequence (B,).

    ``per_sample`` (B, K) = weight·(L_main + L_velocity) of each z_k and its two parts ``per_sample_main`` /
    ``per_sample_velocity``, with their autograd graphs; ``log_q`` (B, K) = log q_φ(z_k | x) (graph to φ).

    ``main`` / ``velocity`` / ``nelbo`` are the weighted estimates of the bound (mean over the K samples),
    detached; ``nelbo`` = main + velocity excludes the surrogate term. ``is_bound`` says whether the time
    density was proper on [0, ∞) (else the numbers drop the mass below t_min and are not a bound).
    """

    surrogate: Tensor
    main: Tensor
    velocity: Tensor
    is_bound: bool
    per_sample: Tensor = field(repr=False)
    per_sample_main: Tensor = field(repr=False)
    per_sample_velocity: Tensor = field(repr=False)
    log_q: Tensor = field(repr=False)

    @property
    def nelbo(self) -> Tensor:
        return self.main + self.velocity


def lomdm_loss(
    model: LoMDM,
    x: Tensor,
    *,
    K: int = 2,
    time: ClampedUniformTime | LogTimeMixture | None = None,
    u: Tensor | None = None,
    weight: Tensor | None = None,
    masks: Tensor | None = None,
    score_term: bool = True,
    generator: torch.Generator | None = None,
    pad_mask: Tensor | None = None,
) -> LoMDMLoss:
    r"""The LoMDM objective of one batch (spec §3 "One training step").

    1. u = −log t per sequence from ``time`` (default: the paper's ``ClampedUniformTime(1e-3)``), or given
       (``u`` with its ``weight`` 1/p(u), default weight 1, i.e. the integrand at that time).
    2. w_φ(x) from stop-grad features of x.
    3. K masks per (x, t) with P(masked) = t^{w_φ} (w_φ detached), or the given ``masks`` (B, K, L).
    4. One batched backbone pass on the K·B noisy sequences → log x_θ[x] (θ's gradient) and features; w_ψ from
       the detached features (ψ's gradient only through L_velocity).
    5. L_k = weight · Σ_masked (L_main + L_velocity), log q_φ(z_k|x) in log space, the RLOO surrogate
       averaged over the batch.

    Gradient routing (autograd does it given the detaching): θ ← L_main; φ ← L_main (through w_φ),
    L_velocity and the score term; ψ ← L_velocity.
    """
    c = model.config
    if x.dim() != 2 or x.shape[-1] != c.length:
        raise ValueError(f"lomdm_loss: x must be (B, L={c.length}), got shape {tuple(x.shape)}")
    if not isinstance(K, int) or K < 2:
        raise ValueError(f"lomdm_loss: K must be an int >= 2 (leave-one-out baseline), got K={K!r}")
    b, length = x.shape
    if u is None:
        time = time if time is not None else ClampedUniformTime()
        u, weight = time.sample(b, generator)
        is_bound = time.is_bound
    else:
        u = torch.as_tensor(u, dtype=torch.float64).expand(b)
        weight = torch.ones(b, dtype=torch.float64) if weight is None else torch.as_tensor(weight).expand(b)
        is_bound = False
    w_phi = model.w_phi(x, pad_mask)  # (B, L), grad → φ
    if masks is None:
        masks = sample_masks(w_phi, u, K, generator, pad_mask)
    elif masks.shape != (b, K, length):
        raise ValueError(f"lomdm_loss: masks must be (B, K, L) = {(b, K, length)}, got {tuple(masks.shape)}")
    xk = x.unsqueeze(1).expand(b, K, length)
    z = torch.where(masks, torch.full_like(xk, c.vocab_size), xk)
    pad_k = None if pad_mask is None else pad_mask.unsqueeze(1).expand(b, K, length).reshape(b * K, length)
    logits, feats = model.backbone(z.reshape(b * K, length), pad_k)
    log_px = torch.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, -1)
    log_px = log_px.gather(-1, xk.reshape(b * K, length, 1)).squeeze(-1).reshape(b, K, length)
    w_psi = model.w_psi_from_features(feats, pad_k).reshape(b, K, length)
    dtype = log_px.dtype
    w_phi_k = w_phi.to(dtype).unsqueeze(1).expand(b, K, length)
    main, vel = position_terms(log_px, w_phi_k, w_psi.to(dtype), masks)
    wt = weight.to(dtype).unsqueeze(-1)
    losses = wt * (main + vel)  # (B, K)
    log_q = forward_log_prob(masks, w_phi_k, u.unsqueeze(-1).expand(b, K), _pad_k(pad_mask, K))
    surrogate = rloo_surrogate(losses, log_q.to(dtype), score_term=score_term).mean()
    return LoMDMLoss(
        surrogate=surrogate,
        main=(wt * main).mean(-1).detach(),
        velocity=(wt * vel).mean(-1).detach(),
        is_bound=is_bound,
        per_sample=losses,
        per_sample_main=wt * main,
        per_sample_velocity=wt * vel,
        log_q=log_q,
    )


def _pad_k(pad_mask: Tensor | None, K: int) -> Tensor | None:
    """(B, L) padding mask → (B, K, L) for the K samples (None stays None)."""
    return None if pad_mask is None else pad_mask.unsqueeze(1).expand(pad_mask.shape[0], K, pad_mask.shape[1])


def exact_objective_at_t(model: LoMDM, x: Tensor, u: float | Tensor) -> tuple[Tensor, Tensor]:
    r"""E_{q_φ(z_t|x)} of the u-integrand at one log-time u, by enumerating all 2^L masks: (L_main, L_velocity).

    Differentiable in θ, φ and ψ: the autograd gradient of (main + velocity) w.r.t. φ is the exact
    ∇_φ E_q[L] = E_q[∇ log q_φ · L] + E_q[∇_φ L] that the RLOO surrogate estimates. For tiny L only.
    """
    c = model.config
    if x.dim() != 2 or x.shape[-1] != c.length:
        raise ValueError(f"exact_objective_at_t: x must be (B, L={c.length}), got shape {tuple(x.shape)}")
    patterns = enumerate_masks(c.length)  # (2^L, L)
    n = patterns.shape[0]
    b = x.shape[0]
    masks = patterns.unsqueeze(0).expand(b, n, c.length)
    u_t = torch.as_tensor(u, dtype=torch.float64).expand(b)
    w_phi = model.w_phi(x)
    xk = x.unsqueeze(1).expand(b, n, c.length)
    z = torch.where(masks, torch.full_like(xk, c.vocab_size), xk).reshape(b * n, c.length)
    logits, feats = model.backbone(z)
    log_px = torch.log_softmax(logits, -1).gather(-1, xk.reshape(b * n, c.length, 1)).squeeze(-1)
    w_psi = model.w_psi_from_features(feats).reshape(b, n, c.length)
    w_phi_k = w_phi.unsqueeze(1).expand(b, n, c.length)
    main, vel = position_terms(log_px.reshape(b, n, c.length), w_phi_k, w_psi, masks)
    q = forward_log_prob(masks, w_phi_k, u_t.unsqueeze(-1).expand(b, n)).exp().to(main.dtype)
    return (q * main).sum(-1), (q * vel).sum(-1)


# ---------------------------------------------------------------------------------------------------------
# the order sampler
# ---------------------------------------------------------------------------------------------------------
def sample(
    model: LoMDM,
    n_samples: int,
    *,
    method: str = "first_hitting",
    top_k: bool = False,
    grid: Tensor | int | None = None,
    generator: torch.Generator | None = None,
    fixed: dict[int, int] | None = None,
    greedy_tokens: bool = False,
) -> SampleResult:
    r"""Generate with the reverse process driven by w_ψ(z_t) (spec §3 "Sampler"); returns tokens and the order.

    - ``method="first_hitting"`` (default): one position per step, i with probability w_ψ^i/Σ_{masked} w_ψ^j,
      exact in continuous time for this time-agnostic denoiser. ``top_k=True``: the masked position of
      largest w_ψ, deterministically.
    - ``method="ancestral"``: the grid sampler; each masked i unmasks from t to s with probability
      1 − (s/t)^{w_ψ^i(z_t)}. ``grid`` defaults to the power grid T = max(128, 8L), p = 1/w_min
      (spec §3 "Grid warning").
      ``top_k=True`` reveals, per step, the positions of largest â (hence of largest w_ψ).

    ``result.order[b, i]`` is the step at which position i was revealed (−1 for ``fixed`` positions).
    """
    c = model.config
    if method not in ("first_hitting", "ancestral"):
        raise ValueError(f"sample: method must be 'first_hitting' or 'ancestral', got method={method!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"sample: n_samples must be a positive int, got n_samples={n_samples!r}")
    denoiser = _no_grad64_denoiser(model)
    if method == "first_hitting":
        return first_hitting_sample(
            denoiser,
            _no_grad64(model.w_psi),
            vocab_size=c.vocab_size,
            length=c.length,
            n_samples=n_samples,
            generator=generator,
            fixed=fixed,
            top_k=top_k,
            greedy_tokens=greedy_tokens,
        )
    if grid is None:
        grid = power_grid(max(128, 8 * c.length), max(1.0, 1.0 / c.w_range[0]))
    return ancestral_sample(
        denoiser,
        model.reverse_schedule(),
        vocab_size=c.vocab_size,
        n_samples=n_samples,
        grid=grid,
        generator=generator,
        fixed=fixed,
        top_k=top_k,
        greedy_tokens=greedy_tokens,
    )


def _no_grad64_denoiser(model: LoMDM) -> Callable[[Tensor, Tensor], Tensor]:
    def denoiser(z: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return model(z.long(), t).double()

    return denoiser
