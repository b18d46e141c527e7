r"""The forward and reverse processes as Pyro distributions (spec §1), and the discrete-time model/guide.

- :class:`ForwardMasking` — q(z_t | x) = Π_i Cat(α^i·onehot(x^i) + (1 − α^i)·onehot(m)), with m absorbing
  (a position already masked in ``x`` stays masked). One masking step of the forward *chain*
  q(z_t | z_s) is the same distribution with x := z_s and α := α(t)/α(s).
- :class:`MaskedReverseStep` — p(z_s | z_t) = Π_i over masked i of Cat(â^i·x_θ^i + (1 − â^i)·onehot(m)),
  unmasked positions carried over (SUBS). With one-hot ``token_probs`` at x it is the posterior
  q(z_s | z_t, x).
- :func:`reverse_model` / :func:`forward_guide` — the reverse chain on a T-step grid observed at x, and the
  forward chain as its guide; ``pyro.infer.Trace_ELBO`` on them estimates −L_T of
  :func:`oemdm_spec.reference.elbo.discrete_nelbo`.

Pyro facts respected here (see shared/spec/environment.md): an explicit ``TorchDistribution`` rather than
``Categorical`` (which gives impossible values a finite log-prob and renormalises), an integer-dtype check
of our own, and the mask id tested before ``z == x``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from ._common import Denoiser, check_grid, check_x, require_finite
from .schedules import Schedule
from .terms import unmask_probability

__all__ = ["ForwardMasking", "MaskedReverseStep", "reverse_model", "forward_guide"]

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)


def _check_tokens(name: str, owner: str, value: Tensor, mask_id: int) -> None:
    if value.dtype not in _INT_DTYPES:
        raise ValueError(f"{owner}: {name} must hold integer token ids, got dtype {value.dtype}")
    if value.numel() and (bool((value < 0).any()) or bool((value > mask_id).any())):
        raise ValueError(
            f"{owner}: {name} must lie in [0, {mask_id}] (mask id = {mask_id}), "
            f"got values in [{int(value.min())}, {int(value.max())}]"
        )


class ForwardMasking(dist.TorchDistribution):
    r"""q(z_t | x): position i keeps x^i with probability α^i and becomes the mask id m otherwise.

    Args:
        x: (..., L) tokens in [0, m]; a position equal to m is already masked and stays masked.
        alpha: (..., L) keep probabilities α^i(x, t) ∈ [0, 1].
        mask_id: m = V.
        log_one_minus_alpha: optional (..., L) log(1 − α), passed when α is within rounding of 1
            (spec §4: 1 − α is never formed by subtraction when the schedule can give it in log space).
    """

    arg_constraints = {"alpha": constraints.unit_interval}
    has_enumerate_support = False

    def __init__(
        self,
        x: Tensor,
        alpha: Tensor,
        mask_id: int,
        log_one_minus_alpha: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if x.dim() < 1:
            raise ValueError(f"ForwardMasking: x must be (..., L), got shape {tuple(x.shape)}")
        _check_tokens("x", "ForwardMasking", x, mask_id)
        if alpha.shape != x.shape and alpha.dim() <= x.dim():
            try:
                alpha = alpha.expand(x.shape)
            except RuntimeError:
                pass  # not broadcastable: reported just below as a ValueError naming alpha
        if alpha.shape != x.shape:
            raise ValueError(f"ForwardMasking: alpha {tuple(alpha.shape)} must have the shape of x {tuple(x.shape)}")
        self.x, self.alpha, self.mask_id = x.long(), alpha, int(mask_id)
        self.log_alpha = torch.log(alpha)
        self.log1m_alpha = torch.log1p(-alpha) if log_one_minus_alpha is None else log_one_minus_alpha
        super().__init__(x.shape[:-1], x.shape[-1:], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, self.mask_id), 1)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> ForwardMasking:
        shape = torch.Size(batch_shape) + self.event_shape
        return ForwardMasking(
            self.x.expand(shape), self.alpha.expand(shape), self.mask_id, self.log1m_alpha.expand(shape)
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            masked = torch.rand(shape, dtype=torch.float64, device=self.x.device) < self.log1m_alpha.double().exp()
            masked = masked | (self.x == self.mask_id)
            return torch.where(masked, torch.full(shape, self.mask_id, device=self.x.device), self.x.expand(shape))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            _check_tokens("value", "ForwardMasking", value, self.mask_id)
        shape = torch.broadcast_shapes(value.shape, self.x.shape)
        value, x = value.long().expand(shape), self.x.expand(shape)
        log_alpha, log1m_alpha = self.log_alpha.expand(shape), self.log1m_alpha.expand(shape)
        already = x == self.mask_id
        is_mask = value == self.mask_id  # tested first: a mask value never counts as "equal to x"
        zero = torch.zeros((), dtype=log_alpha.dtype)
        ninf = torch.full((), -torch.inf, dtype=log_alpha.dtype)
        per_pos = torch.where(
            already,
            torch.where(is_mask, zero, ninf),
            torch.where(is_mask, log1m_alpha, torch.where(value == x, log_alpha, ninf)),
        )
        # −inf is the correct log-probability of an impossible value; NaN never is
        return require_finite("ForwardMasking.log_prob", per_pos.sum(-1), allow_inf=True)


class MaskedReverseStep(dist.TorchDistribution):
    r"""p(z_s | z_t): each masked i unmasks with probability â^i to a token drawn from x_θ^i (SUBS).

    Args:
        z_t: (..., L) tokens in [0, m].
        token_probs: (..., L, V) the denoiser's distributions x_θ^i over the real tokens (rows sum to 1).
        unmask_prob: (..., L) â^i ∈ [0, 1].
        mask_id: m = V.
    """

    arg_constraints = {"unmask_prob": constraints.unit_interval}

    def __init__(
        self,
        z_t: Tensor,
        token_probs: Tensor,
        unmask_prob: Tensor,
        mask_id: int,
        validate_args: bool | None = None,
    ) -> None:
        _check_tokens("z_t", "MaskedReverseStep", z_t, mask_id)
        if token_probs.shape != (*z_t.shape, mask_id):
            raise ValueError(
                f"MaskedReverseStep: token_probs must be (..., L, V={mask_id}) matching z_t {tuple(z_t.shape)}, "
                f"got {tuple(token_probs.shape)}"
            )
        if unmask_prob.shape != z_t.shape:
            raise ValueError(
                f"MaskedReverseStep: unmask_prob {tuple(unmask_prob.shape)} must match z_t {tuple(z_t.shape)}"
            )
        self.z_t, self.token_probs, self.unmask_prob, self.mask_id = z_t.long(), token_probs, unmask_prob, int(mask_id)
        super().__init__(z_t.shape[:-1], z_t.shape[-1:], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, self.mask_id), 1)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> MaskedReverseStep:
        shape = torch.Size(batch_shape) + self.event_shape
        return MaskedReverseStep(
            self.z_t.expand(shape),
            self.token_probs.expand(*shape, self.mask_id),
            self.unmask_prob.expand(shape),
            self.mask_id,
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            probs = self.token_probs.double().expand(*shape, self.mask_id)
            tokens = torch.multinomial(probs.reshape(-1, self.mask_id), 1).reshape(shape)
            unmask = torch.rand(shape, dtype=torch.float64) < self.unmask_prob.double()
            masked = self.z_t.expand(shape) == self.mask_id
            revealed = torch.where(unmask, tokens, torch.full_like(tokens, self.mask_id))
            return torch.where(masked, revealed, self.z_t.expand(shape))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            _check_tokens("value", "MaskedReverseStep", value, self.mask_id)
        shape = torch.broadcast_shapes(value.shape, self.z_t.shape)
        value, z_t = value.long().expand(shape), self.z_t.expand(shape)
        token_probs = self.token_probs.expand(*shape, self.mask_id)
        unmask_prob = self.unmask_prob.expand(shape)
        dtype = token_probs.dtype
        zero = torch.zeros((), dtype=dtype)
        ninf = torch.full((), -torch.inf, dtype=dtype)
        masked = z_t == self.mask_id
        stays = value == self.mask_id  # tested first: the mask id has no token probability
        token = value.clamp(max=self.mask_id - 1).unsqueeze(-1)
        log_token = torch.log(token_probs.gather(-1, token).squeeze(-1))
        from_masked = torch.where(stays, torch.log1p(-unmask_prob), torch.log(unmask_prob) + log_token)
        carried = torch.where(value == z_t, zero, ninf)
        return require_finite(
            "MaskedReverseStep.log_prob", torch.where(masked, from_masked, carried).sum(-1), allow_inf=True
        )


# ---------------------------------------------------------------------------------------------------------
# The discrete-time model and guide
# ---------------------------------------------------------------------------------------------------------
def _check_chain_args(x: Tensor, forward: Schedule, grid: Tensor | int, vocab_size: int) -> tuple[Tensor, Tensor]:
    x = check_x(x, forward.length, vocab_size)
    grid = check_grid(grid)
    return x, grid


def reverse_model(
    x: Tensor,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule | None,
    grid: Tensor | int,
    vocab_size: int,
) -> None:
    r"""The reverse chain z_{t_T} = all masked → z_{t_{T−1}} → … → z_{t_0} = x (observed).

    Latent sites ``z_1 .. z_{T−1}`` (z_k at time t_k); the last step is observed at x.
    ``forward`` is unused by the model; it is in the signature because Pyro calls model and guide alike.
    """
    del forward
    x, grid = _check_chain_args(x, reverse, grid, vocab_size)  # type: ignore[arg-type]
    assert reverse is not None
    n_steps = grid.numel() - 1
    length = x.shape[-1]
    with pyro.plate("sequences", x.shape[0]):
        z = torch.full_like(x, vocab_size)
        for k in range(n_steps, 0, -1):
            batch = z.shape[:-1]
            flat = z.reshape(-1, length)
            s = torch.full(flat.shape[:1], float(grid[k - 1]), dtype=torch.float64)
            t = torch.full(flat.shape[:1], float(grid[k]), dtype=torch.float64)
            probs = torch.softmax(denoiser(flat, t).double(), dim=-1)
            a_hat = unmask_probability(reverse.log_one_minus_alpha(s, flat), reverse.log_one_minus_alpha(t, flat))
            step = MaskedReverseStep(
                z, probs.reshape(*batch, length, vocab_size), a_hat.reshape(*batch, length), vocab_size
            )
            if k > 1:
                z = pyro.sample(f"z_{k - 1}", step)
            else:
                pyro.sample("x", step, obs=x)


def forward_guide(
    x: Tensor,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule | None,
    grid: Tensor | int,
    vocab_size: int,
) -> None:
    r"""The forward chain as the guide: z_1 ~ q(z_{t_1} | x), then z_k ~ q(z_{t_k} | z_{t_{k−1}}).

    One forward step masks each still-clean position with probability 1 − α(t_k)/α(t_{k−1}) (the
    ratio of survival probabilities), so the chain's marginals are q(z_{t_k} | x).
    """
    del denoiser, reverse
    x, grid = _check_chain_args(x, forward, grid, vocab_size)
    n_steps = grid.numel() - 1
    with pyro.plate("sequences", x.shape[0]):
        z = x
        prev_log_alpha = torch.zeros(x.shape, dtype=torch.float64)
        for k in range(1, n_steps):
            t = torch.full(x.shape[:1], float(grid[k]), dtype=torch.float64)
            log_alpha = torch.log(forward.alpha(t, x))
            keep = torch.exp(log_alpha - prev_log_alpha)
            z = pyro.sample(f"z_{k}", ForwardMasking(z, keep.expand(z.shape), vocab_size))
            prev_log_alpha = log_alpha
