"""Schedules: closed-form velocity against autograd, boundary values, log space, and validation errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oemdm_spec.reference.schedules import (
    ARMSchedule,
    BlockSchedule,
    CosineSchedule,
    FixedOrderSchedule,
    InputPolynomialSchedule,
    MDLMSchedule,
    PolynomialSchedule,
    VocabPolynomialSchedule,
)

L = 4
X = torch.tensor([[0, 2, 1, 3], [3, 3, 0, 1]])
W_VOCAB = torch.tensor([0.3, 1.0, 2.5, 0.7], dtype=torch.float64)


def all_schedules():
    """(schedule, input u or None) pairs covering every class."""
    return [
        (MDLMSchedule(L), None),
        (MDLMSchedule(L, eps=1e-3), None),
        (PolynomialSchedule(torch.tensor([0.05, 0.7, 1.0, 1.35], dtype=torch.float64)), None),
        (PolynomialSchedule(2.0, length=L), None),
        (CosineSchedule(L), None),
        (ARMSchedule(L, 0.1), None),
        (FixedOrderSchedule([2, 0, 3, 1], 0.05), None),
        (BlockSchedule(L, 2, 0.2), None),
        (InputPolynomialSchedule(lambda u: 0.5 + u.double() / 4, L), X),
        (VocabPolynomialSchedule(W_VOCAB, L), X),
    ]


def autograd_velocity(schedule, t: torch.Tensor, u) -> torch.Tensor:
    """−∂_tα/(1−α) by autograd: an independent computation of the velocity."""
    t = t.clone().requires_grad_(True)
    alpha = schedule.alpha(t, u)
    cols = []
    for i in range(alpha.shape[-1]):
        (g,) = torch.autograd.grad(alpha[..., i].sum(), t, retain_graph=True)
        cols.append(-g)
    return torch.stack(cols, -1) / (1 - alpha.detach())


def avoid_kinks(schedule, t: torch.Tensor) -> torch.Tensor:
    """Move t off the kinks by 1e-6: there the one-sided derivative autograd picks is arbitrary."""
    for k in schedule.kinks():
        t = torch.where((t - k).abs() < 1e-6, t + 2e-6, t)
    return t


@pytest.mark.parametrize("index", range(len(all_schedules())))
@settings(max_examples=25, deadline=None)
@given(t=st.floats(min_value=1e-4, max_value=1 - 1e-4))
def test_velocity_equals_autograd(index: int, t: float) -> None:
    schedule, u = all_schedules()[index]
    batch = 2 if u is not None else 1
    tt = avoid_kinks(schedule, torch.full((batch,), t, dtype=torch.float64))
    closed = schedule.velocity(tt, u)
    auto = autograd_velocity(schedule, tt, u)
    # Both are float64 evaluations of the same derivative; 1 − α is not small at these t unless α ≈ 1,
    # where autograd's 1 − α loses relative accuracy ~1e-16/(1−α) ≤ 1e-8 for t ≥ 1e-4 (α ≥ 1 − 1e-4·slope).
    torch.testing.assert_close(closed, auto, rtol=1e-6, atol=1e-9)


def autograd_log_velocity(schedule, t: torch.Tensor, u) -> torch.Tensor:
    """A = ∂_t log(1 − α): autograd through the log-space closed form, accurate where 1 − α is tiny."""
    t = t.clone().requires_grad_(True)
    log1m = schedule.log_one_minus_alpha(t, u)
    cols = [torch.autograd.grad(log1m[..., i].sum(), t, retain_graph=True)[0] for i in range(log1m.shape[-1])]
    return torch.stack(cols, -1)


@pytest.mark.parametrize("index", range(len(all_schedules())))
def test_velocity_near_the_ends(index: int) -> None:
    """Near t = 0 (down to 1e-12, where 1 − α is far below the resolution of α) and near t = 1.

    There autograd of α loses accuracy (1 − α cancels), so the independent computation is autograd of the
    log-space form: ∂_t log(1 − α) = −∂_tα/(1 − α) = A.
    """
    schedule, u = all_schedules()[index]
    batch = 2 if u is not None else 1
    for t in (1e-12, 1e-9, 1e-6, 1 - 1e-6, 1 - 1e-12):
        tt = avoid_kinks(schedule, torch.full((batch,), t, dtype=torch.float64))
        A = schedule.velocity(tt, u)
        assert torch.isfinite(A).all() and (A >= 0).all()
        torch.testing.assert_close(A, autograd_log_velocity(schedule, tt, u), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("index", range(len(all_schedules())))
def test_boundaries_monotone_and_log_space(index: int) -> None:
    schedule, u = all_schedules()[index]
    batch = 2 if u is not None else 1
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    t = t.unsqueeze(-1).expand(401, batch)
    alpha = schedule.alpha(t, u)
    end = getattr(schedule, "eps", 0.0) if isinstance(schedule, MDLMSchedule) else 0.0
    torch.testing.assert_close(alpha[0], torch.ones_like(alpha[0]), rtol=0, atol=1e-15)
    torch.testing.assert_close(alpha[-1], torch.full_like(alpha[-1], end), rtol=0, atol=1e-12)
    assert (alpha.diff(dim=0) < 0).all(), "α must be strictly decreasing in t"
    # log(1 − α) agrees with the naive form where the naive form is accurate (1 − α not tiny) ...
    inner = t[1:-1]
    naive = torch.log1p(-schedule.alpha(inner, u))
    torch.testing.assert_close(schedule.log_one_minus_alpha(inner, u), naive, rtol=1e-9, atol=1e-12)
    # ... and stays finite where the naive one underflows to log(0) = −inf.
    tiny = torch.full((batch,), 1e-30, dtype=torch.float64)
    assert torch.isfinite(schedule.log_one_minus_alpha(tiny, u)).all()


def test_block_special_cases() -> None:
    t = torch.rand(50, dtype=torch.float64)
    # Block size 1 is the ARM schedule; block size L is MDLM's 1 − t.
    torch.testing.assert_close(BlockSchedule(L, 1, 0.1).alpha(t), ARMSchedule(L, 0.1).alpha(t), rtol=0, atol=0)
    torch.testing.assert_close(BlockSchedule(L, L, 0.1).alpha(t), MDLMSchedule(L).alpha(t), rtol=0, atol=1e-15)
    # The identity order is the ARM schedule.
    torch.testing.assert_close(FixedOrderSchedule(range(L), 0.1).alpha(t), ARMSchedule(L, 0.1).alpha(t))


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: MDLMSchedule(L, eps=0.5), r"MDLMSchedule: invalid eps=0\.5"),
        (lambda: MDLMSchedule(0), r"MDLMSchedule: invalid length=0"),
        (lambda: PolynomialSchedule(torch.tensor([1.0, -0.5])), r"PolynomialSchedule: invalid w=-0\.5"),
        (lambda: PolynomialSchedule(1.0), r"PolynomialSchedule: invalid length=None"),
        (lambda: ARMSchedule(L, 0.0), r"ARMSchedule: invalid eps=0\.0"),
        (lambda: ARMSchedule(L, 0.7), r"ARMSchedule: invalid eps=0\.7"),
        (lambda: FixedOrderSchedule([0, 0, 1], 0.1), r"FixedOrderSchedule: invalid order=\[0, 0, 1\]"),
        (lambda: BlockSchedule(5, 2, 0.1), r"BlockSchedule: invalid block_size=2.*divisor of length=5"),
        (lambda: VocabPolynomialSchedule(torch.tensor([1.0, 0.0]), L), r"VocabPolynomialSchedule: invalid w=0\.0"),
        (lambda: MDLMSchedule(L).alpha(torch.tensor([1.5])), r"MDLMSchedule: invalid t=1\.5"),
        (lambda: CosineSchedule(L).velocity(torch.tensor([-0.1])), r"CosineSchedule: invalid t=-0\.1"),
        (lambda: MDLMSchedule(L).alpha(torch.tensor([float("nan")])), r"MDLMSchedule: invalid t=nan"),
        (lambda: VocabPolynomialSchedule(W_VOCAB, L).alpha(0.5), r"invalid u=None"),
        (
            lambda: VocabPolynomialSchedule(W_VOCAB, L).alpha(torch.tensor([0.5]), torch.tensor([[0, 1, 2, 4]])),
            r"VocabPolynomialSchedule: invalid u=.*tokens must lie in \[0, 4\)",
        ),
    ],
)
def test_validation_errors_name_the_problem(make, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        make()
