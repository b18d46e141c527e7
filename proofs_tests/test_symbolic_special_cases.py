"""Issue item 9 (GenMD4) and the LoMDM formulas of spec §3."""

from __future__ import annotations

import pytest

from oemdm_spec.symbolic import genmd4, kl, lomdm


@pytest.mark.parametrize("vocab", [2, 3, 4])
def test_item9_genmd4_is_a_special_case(vocab: int) -> None:
    assert kl.prove_zero(genmd4.genmd4_as_oemdm_difference(vocab))


def test_lomdm_per_position_formulas() -> None:
    assert lomdm.per_position_differences() == [0, 0, 0]
    assert lomdm.log_q_difference(3) == 0


def test_rloo_two_samples_is_the_genmd4_form() -> None:
    assert lomdm.rloo_k2_difference() == 0
