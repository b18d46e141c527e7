"""Issue 14: the LoMDM order heads and absolute positions.

The fast DiT has rotary position embeddings only. With bidirectional attention a layer is then equivariant
under permutations of *identical* rows and sees only content + relative offsets: on the all-masked state every
row has the same input, so every ŵ ties, and no training can make ψ prefer one position from there.
``head_positions=True`` adds a learned absolute position embedding to the heads' input.
"""

from __future__ import annotations

import torch

from oemdm_spec.fast import build_config
from oemdm_spec.fast.model import ModelConfig, OeMDM

L, V = 8, 2


def _model(head_positions: bool, seed: int = 0) -> OeMDM:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, seq_len=L, model_type="lomdm", n_layer=1, n_head=2, d_model=16, cond_dim=8,
                      head_positions=head_positions)
    model = OeMDM(cfg)
    # leave the zero init behind: random scalar heads and position embeddings (what training could reach)
    with torch.no_grad():
        for head in (model.phi, model.psi):
            head.head.weight.normal_()
            if head.pos is not None:
                head.pos.normal_()
    return model


def _w_psi_all_masked(model: OeMDM) -> torch.Tensor:
    z = torch.full((1, L), V)
    return model.w_psi(model.backbone.features(z))[0]


def test_without_head_positions_all_masked_psi_ties() -> None:
    w = _w_psi_all_masked(_model(False))
    assert torch.allclose(w, w[0].expand_as(w), atol=1e-6), w


def test_without_head_positions_heads_are_permutation_equivariant_on_equal_rows() -> None:
    # constant input rows: any permutation of the positions leaves the scores unchanged (they are all equal)
    model = _model(False)
    f = torch.randn(1, 1, 16).expand(1, L, 16).contiguous()
    v = model.phi(f)[0]
    perm = torch.randperm(L, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model.phi(f[:, perm])[0], v[perm], atol=1e-6)
    assert torch.allclose(v, v[0].expand_as(v), atol=1e-6)


def test_head_positions_break_the_tie() -> None:
    w = _w_psi_all_masked(_model(True))
    assert float(w.detach().std()) > 1e-3, w


def test_head_positions_keeps_w_constant_at_init_and_the_backbone_unchanged() -> None:
    torch.manual_seed(0)
    kw = dict(vocab_size=V, seq_len=L, model_type="lomdm", n_layer=1, n_head=2, d_model=16, cond_dim=8)
    a = OeMDM(ModelConfig(**kw))
    torch.manual_seed(0)
    b = OeMDM(ModelConfig(**kw, head_positions=True))
    for (na, pa), (nb, pb) in zip(a.backbone.named_parameters(), b.backbone.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)  # the heads are attached after the backbone is drawn
    x = torch.randint(V, (3, L))
    w = b.w_phi(b.backbone.features(x))
    assert torch.allclose(w, torch.full_like(w, b.cfg.c1))  # the scalar head starts at zero: w ≡ c1
    assert 0 < float(b.phi.pos.detach().abs().max()) < 0.2


def test_head_positions_learns_a_position_dependent_order_from_all_masked() -> None:
    # a few gradient steps of ψ toward "even positions first" on the all-masked state
    target = torch.tensor([1.0, 0.0] * (L // 2))
    for hp, should_learn in ((False, False), (True, True)):
        torch.manual_seed(0)
        model = OeMDM(ModelConfig(vocab_size=V, seq_len=L, model_type="lomdm", n_layer=1, n_head=2, d_model=16,
                                  cond_dim=8, head_positions=hp))
        opt = torch.optim.Adam(model.psi.parameters(), lr=3e-2)
        z = torch.full((4, L), V)
        for _ in range(30):
            w = model.w_psi(model.backbone.features(z))
            loss = -(w * (target - 0.5)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        w = _w_psi_all_masked(model).detach()
        gap = float(w[target == 1].mean() - w[target == 0].mean())
        if should_learn:
            assert gap > 0.1, (hp, w)
        else:
            assert abs(gap) < 1e-5, (hp, w)


def test_config_key_reaches_the_model() -> None:
    cfg = build_config({"data": "task:latents:N=3,P=2", "model": "lomdm", "head_positions": True, "n_layer": 1,
                        "d_model": 16, "n_head": 2, "cond_dim": 8})
    mc = cfg.model_config(vocab_size=2)
    assert mc.head_positions is True and mc.seq_len == 5
    model = OeMDM(mc)
    assert model.phi.pos is not None and model.phi.pos.shape == (5, 16)
    assert OeMDM(build_config({"data": "task:latents:N=3,P=2", "model": "lomdm", "n_layer": 1, "d_model": 16,
                               "n_head": 2, "cond_dim": 8}).model_config(2)).phi.pos is None
