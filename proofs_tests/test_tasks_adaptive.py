"""fast/adaptive.py: the planners reveal what their rule says, k > 1, fixed positions, ties, the exact law of a
two-position toy, and argument errors."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from oemdm_spec.fast.adaptive import adaptive_sample, position_scores


def table_denoiser(rows: list[list[float]]):
    """A denoiser that ignores z and returns the same per-position table for every sequence."""
    table = torch.tensor(rows, dtype=torch.float64)

    def denoise(z: torch.Tensor) -> torch.Tensor:
        return table.expand(z.shape[0], *table.shape).clone()

    return denoise


A, B = [0.5, 0.5, 0.0, 0.0], [0.4, 0.3, 0.3, 0.0]  # conf .5 > .4; margin 0 < .1; H .693 < 1.089
C, D = [0.55, 0.15, 0.15, 0.15], [0.5, 0.5, 0.0, 0.0]  # conf .55 > .5; margin .4 > 0; H 1.18 > .693


@pytest.mark.parametrize("rows,rule,first", [
    ([A, B], "confidence", 0), ([A, B], "margin", 1), ([A, B], "entropy", 0),
    ([C, D], "confidence", 0), ([C, D], "margin", 0), ([C, D], "entropy", 1),
])
def test_first_reveal_follows_the_rule(rows: list[list[float]], rule: str, first: int) -> None:
    init = torch.full((1, 2), 4)
    _, order = adaptive_sample(table_denoiser(rows), init, 4, rule=rule, generator=torch.Generator().manual_seed(0))
    assert order[0, first] == 0 and order[0, 1 - first] == 1


def test_scores_by_hand() -> None:
    p = torch.tensor([[A, B, C]], dtype=torch.float64)
    assert position_scores(p, "confidence").tolist() == [[0.5, 0.4, 0.55]]
    assert position_scores(p, "margin")[0].tolist() == pytest.approx([0.0, 0.1, 0.4], abs=1e-15)
    h = lambda q: -sum(x * torch.log(torch.tensor(x, dtype=torch.float64)).item() for x in q if x > 0)
    assert position_scores(p, "entropy")[0].tolist() == pytest.approx([-h(A), -h(B), -h(C)], abs=1e-15)


def test_k_greater_than_one_fixed_positions_and_ties() -> None:
    m = 3
    # confidences .9, .6, .6, .8, .6 at positions 0..4; position 1 is fixed
    rows = [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.8, 0.2, 0.0], [0.6, 0.4, 0.0]]
    init = torch.tensor([[m, 2, m, m, m]])
    tokens, order = adaptive_sample(table_denoiser(rows), init, m, rule="confidence", k=2, greedy=True)
    # step 0: positions 0 (.9) and 3 (.8); step 1: the tie .6/.6 between 2 and 4 is one step, both revealed
    assert order.tolist() == [[0, -1, 1, 0, 1]]
    assert tokens.tolist() == [[0, 2, 0, 0, 0]]  # greedy argmax; the fixed token 2 is untouched
    _, order1 = adaptive_sample(table_denoiser(rows), init, m, rule="confidence", k=1, greedy=True)
    assert order1.tolist() == [[0, -1, 2, 1, 3]]  # tie .6 between 2 and 4: the lower index first
    # all positions tied: plain left-to-right
    flat = [[0.5, 0.5]] * 6
    _, o = adaptive_sample(table_denoiser(flat), torch.full((2, 6), 2), 2, rule="margin", k=4,
                           generator=torch.Generator().manual_seed(1))
    assert o.tolist() == [[0, 0, 0, 0, 1, 1]] * 2


def test_fixed_positions_never_change_and_all_masks_are_filled() -> None:
    gen = torch.Generator().manual_seed(2)
    v, m = 5, 5
    probs = torch.rand(7, v, generator=gen, dtype=torch.float64)
    init = torch.randint(v, (50, 7), generator=gen)
    init[torch.rand(50, 7, generator=gen) < 0.6] = m
    for rule in ("confidence", "margin", "entropy"):
        for k in (1, 3):
            calls: list[int] = []

            def denoise(z: torch.Tensor, calls: list[int] = calls) -> torch.Tensor:
                calls.append(1)
                return probs.expand(z.shape[0], 7, v)

            tok, order = adaptive_sample(denoise, init, m, rule=rule, k=k, generator=gen, temperature=0.7)
            fixed = init != m
            assert torch.equal(tok[fixed], init[fixed]) and bool((order[fixed] == -1).all())
            assert bool((tok < v).all()) and bool((order[~fixed] >= 0).all())
            assert len(calls) == -(-int((init == m).sum(-1).max()) // k)  # ceil(max masked / k) passes


def test_law_of_a_two_position_toy_equals_the_hand_computed_one() -> None:
    m = 2

    def denoise(z: torch.Tensor) -> torch.Tensor:
        """p(x1) = [.2, .8] and p(x0) = [.7, .3] while both are masked (confidence .8 > .7: reveal 1 first);
        then p(x0 | x1 = 0) = [.9, .1], p(x0 | x1 = 1) = [.4, .6]; p(x1 | x0) = [.5, .5] (never used)."""
        out = torch.empty(z.shape[0], 2, 2, dtype=torch.float64)
        for b, (x0, x1) in enumerate(z.tolist()):
            out[b, 0] = torch.tensor([0.7, 0.3] if x1 == m else [0.9, 0.1] if x1 == 0 else [0.4, 0.6])
            out[b, 1] = torch.tensor([0.2, 0.8] if x0 == m else [0.5, 0.5])
        return out

    n = 20_000
    tok, order = adaptive_sample(denoise, torch.full((n, 2), m), m, rule="confidence",
                                 generator=torch.Generator().manual_seed(3))
    assert bool((order[:, 1] == 0).all()) and bool((order[:, 0] == 1).all())
    counts = torch.bincount(tok[:, 0] * 2 + tok[:, 1], minlength=4).tolist()  # (x0, x1) = 00, 01, 10, 11
    law = [0.2 * 0.9, 0.8 * 0.4, 0.2 * 0.1, 0.8 * 0.6]
    # 3 dof, fixed seed: p > 1e-3 leaves room for the draw
    assert chisquare(counts, [n * q for q in law]).pvalue > 1e-3
    # the law of the other order (x0 first, then x1 ~ [.5, .5]) is rejected by the same test
    wrong = [0.7 * 0.5, 0.7 * 0.5, 0.3 * 0.5, 0.3 * 0.5]
    assert chisquare(counts, [n * q for q in wrong]).pvalue < 1e-6


def test_temperature_sharpens_the_token_law() -> None:
    n = 20_000
    tok, _ = adaptive_sample(table_denoiser([[0.2, 0.8]]), torch.full((n, 1), 2), 2, temperature=0.5,
                             generator=torch.Generator().manual_seed(4))
    law = [0.04 / 0.68, 0.64 / 0.68]  # p^2 renormalised
    assert chisquare(torch.bincount(tok[:, 0], minlength=2).tolist(), [n * q for q in law]).pvalue > 1e-3


def test_bad_arguments_are_named() -> None:
    d = table_denoiser([[0.5, 0.5]])
    init = torch.full((1, 1), 2)
    with pytest.raises(ValueError, match="rule"):
        adaptive_sample(d, init, 2, rule="random")
    with pytest.raises(ValueError, match="k must"):
        adaptive_sample(d, init, 2, k=0)
    with pytest.raises(ValueError, match="temperature"):
        adaptive_sample(d, init, 2, temperature=0.0)
    with pytest.raises(ValueError, match="init"):
        adaptive_sample(d, init.float(), 2)
    with pytest.raises(ValueError, match="init ids"):
        adaptive_sample(table_denoiser([[0.5, 0.5]] * 2), torch.tensor([[3, 2]]), 2)
    with pytest.raises(ValueError, match="denoise must return"):
        adaptive_sample(lambda z: torch.ones(1, 5, 2), init, 2)
    with pytest.raises(ValueError, match="probabilities"):
        adaptive_sample(lambda z: -torch.ones(1, 1, 2), init, 2)
