"""The LoMDM order sampler (spec §3 "Order semantics", "Sampler"), the order pictures and the synthetic task."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from oemdm_spec.reference.networks import LoMDM, LoMDMConfig
from oemdm_spec.reference.order_viz import SHADES, order_heatmap, order_text
from oemdm_spec.reference.sampling import lomdm_sample, power_grid
from oemdm_spec.reference.tasks import HiddenChain, neighbour_fraction, random_order_neighbour_fraction, spearman

F64 = torch.float64
L, V = 4, 3


def spread_model() -> LoMDM:
    cfg = LoMDMConfig(vocab_size=V, length=L, d_model=8, n_layer=1, n_head=2, c1=0.7, c2=0.65, dtype=F64)
    model = LoMDM(cfg, seed=3)
    with torch.no_grad():  # distinct positions (the fully masked z differs only by position) and spread scores
        model.backbone.pos.copy_(torch.randn(L, 8, generator=torch.Generator().manual_seed(0), dtype=F64))
        model.psi.head.weight.mul_(8.0)
        model.psi.head.bias.zero_()
    return model


def first_position_law(model: LoMDM) -> torch.Tensor:
    w = model.w_psi(torch.full((1, L), V)).detach()[0]
    return w / w.sum()


def test_next_position_law_fine_grid_chi_square() -> None:
    """Ancestral sampling on a fine grid (continuous-time simulation): the first revealed position is i with
    probability w_ψ^i/Σ_j w_ψ^j. Chi-square goodness of fit, p > 1e-3. Ties (two reveals in one step of the
    uniform T = 300 grid, probability ≈ Σw·Δu/2 ≈ 0.5%) are dropped; that moves each cell by ≲ 0.3%, below the
    per-cell standard error √(p(1−p)/n) ≈ 1% at n = 2000."""
    n = 2000
    model = spread_model()
    p = first_position_law(model)
    assert float(p.max() / p.min()) > 1.5  # the law is far from uniform, so the test can tell them apart
    gen = torch.Generator().manual_seed(0)
    res = lomdm_sample(model, n, method="ancestral", grid=power_grid(300, 1.0), generator=gen)
    first = res.order == res.order.min(-1, keepdim=True).values
    single = first.sum(-1) == 1
    assert float(single.double().mean()) > 0.97
    counts = first[single].sum(0).double()
    expected = p * counts.sum()
    _, pval = stats.chisquare(counts.numpy(), expected.numpy())
    assert pval > 1e-3, (counts.tolist(), expected.tolist())
    # and it can fail: the same counts against the uniform law are rejected
    _, p_uniform = stats.chisquare(counts.numpy(), torch.full((L,), counts.sum() / L).numpy())
    assert p_uniform < 1e-6


def test_first_hitting_next_position_law() -> None:
    """The exact first-hitting sampler has the same first-position law (an independent implementation)."""
    model = spread_model()
    p = first_position_law(model)
    gen = torch.Generator().manual_seed(1)
    res = lomdm_sample(model, 6000, generator=gen)
    assert bool((res.order.sort(-1).values == torch.arange(L)).all())  # one reveal per step: a permutation
    counts = (res.order == 0).sum(0).double()
    _, pval = stats.chisquare(counts.numpy(), (p * counts.sum()).numpy())
    assert pval > 1e-3


def test_top_k_variant_follows_w_psi() -> None:
    model = spread_model()
    p = first_position_law(model)
    res = lomdm_sample(model, 5, top_k=True, generator=torch.Generator().manual_seed(2))
    assert bool((res.order.argmin(-1) == p.argmax()).all())
    # ancestral top-k: the positions revealed at the first revealing step are the top ones by w_ψ
    res = lomdm_sample(model, 5, method="ancestral", top_k=True, generator=torch.Generator().manual_seed(2))
    for row in res.order:
        first = row == row.min()
        assert float(p[first].min()) >= float(p[~first].max()) if bool((~first).any()) else True
    # first-hitting top-k: at every step the revealed position has the largest w_ψ among the still-masked ones
    res = lomdm_sample(model, 3, top_k=True, generator=torch.Generator().manual_seed(3))
    for row in range(3):
        z = torch.full((1, L), V)
        for step in range(L):
            w = model.w_psi(z).detach()[0]
            masked = z[0] == V
            pos = int((res.order[row] == step).nonzero())
            assert float(w[pos]) == float(w[masked].max())
            z[0, pos] = res.tokens[row, pos]


def test_sampler_fixed_positions_and_bad_input() -> None:
    model = spread_model()
    res = lomdm_sample(model, 4, fixed={1: 2}, generator=torch.Generator().manual_seed(4))
    assert bool((res.tokens[:, 1] == 2).all()) and bool((res.order[:, 1] == -1).all())
    with pytest.raises(ValueError, match="method='beam'"):
        lomdm_sample(model, 2, method="beam")
    with pytest.raises(ValueError, match="n_samples=0"):
        lomdm_sample(model, 0)


# ---------------------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------------------
def test_order_heatmap_writes_png(tmp_path) -> None:
    order = torch.stack([torch.randperm(6, generator=torch.Generator().manual_seed(i)) for i in range(5)])
    path = order_heatmap(order, tmp_path / "o.png", columns=[5, 4, 3, 2, 1, 0], column_label="chain link")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="permutation"):
        order_heatmap(order, tmp_path / "bad.png", columns=[0, 0, 1, 2, 3, 4])


def test_order_text_shades_by_step() -> None:
    tokens = torch.tensor([[5, 6, 7, 8]])
    order = torch.tensor([[3, 0, 2, 1]])
    text = order_text(tokens, order, itos=lambda i: f"t{i}")
    parts = text.split(" ")
    assert parts[1] == SHADES[0] + "t6"  # revealed first: darkest
    assert parts[0] == SHADES[-1] + "t5"  # revealed last: lightest
    ansi = order_text(tokens, order, ansi=True)
    assert ansi.count("\x1b[0m") == 4 and "48;2;40;40;40m" in ansi  # first token on the darkest grey


# ---------------------------------------------------------------------------------------------------------
# the synthetic task
# ---------------------------------------------------------------------------------------------------------
def test_hidden_chain_statistics() -> None:
    task = HiddenChain(10, 8, noise=0.2, seed=1)
    x = task.sample(20_000, torch.Generator().manual_seed(0))
    links = x[:, task.perm]
    follows = (links[:, 1:] == task.g[links[:, :-1]]).double().mean()
    want = 1 - 0.2 + 0.2 / 8
    assert abs(float(follows) - want) < 4 * math.sqrt(want * (1 - want) / (20_000 * 9))
    # the entropy formula against the plug-in entropy of the empirical transition row
    trans = (links[:, 1:] - task.g[links[:, :-1]]) % 8  # 0: followed g; 1..7: one of the other tokens
    freq = torch.bincount(trans.flatten(), minlength=8).double()
    freq = freq / freq.sum()
    plug_in = float(-torch.xlogy(freq, freq).sum())
    assert abs(plug_in - task.step_entropy()) < 0.01  # plug-in bias ≈ 7/(2·180,000) ≪ 0.01
    assert task.entropy() == pytest.approx(math.log(8) + 9 * task.step_entropy(), rel=1e-15)


def test_random_order_neighbour_fraction_formula() -> None:
    """The closed form against uniformly random permutations (200,000 events)."""
    chain_index = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    order = torch.stack([torch.randperm(9, generator=gen) for _ in range(25_000)])
    mc = neighbour_fraction(order, chain_index)
    exact = random_order_neighbour_fraction(9)
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / (25_000 * 8)) * 2  # ×2: events are correlated
    # a chain-growing order hits every time
    grow = chain_index.argsort().argsort().unsqueeze(0)  # position i revealed at step chain_index[i]
    assert neighbour_fraction(grow, chain_index) == 1.0


def test_spearman() -> None:
    ref = torch.tensor([3.0, 0.0, 1.0, 2.0])
    assert float(spearman(ref.unsqueeze(0), ref)) == pytest.approx(1.0)
    assert float(spearman(-ref.unsqueeze(0), ref)) == pytest.approx(-1.0)
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert float(spearman(a, b)) == pytest.approx(stats.spearmanr(a[0], b).statistic)
