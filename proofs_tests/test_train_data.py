"""The trainer's data path (issue 12): padded batches, task data, corpora from paths, zero-shot evaluation.

Padding: a batch padded with trailing pad tokens (valid = False there) must give, per real token, exactly
the loss and the bound of the unpadded batch of the same sentences under the same noise: padding is never
masked, never scored, hidden from attention, and left out of the LoMDM exponents' NormSig mean and of the
evaluation time density. Two computations: the padded batch through ``valid``, and the unpadded batch.
"""

from __future__ import annotations

import json

import pytest
import torch

from oemdm_spec.cli import main as cli_main
from oemdm_spec.fast.config import ConfigError, build_config
from oemdm_spec.fast.evaluate import sequence_bound
from oemdm_spec.fast.model import ModelConfig, OeMDM
from oemdm_spec.fast.objectives import StepNoise, oemdm_loss

V, L, P, B = 9, 8, 4, 3
# float32 attention with and without a key mask sums the same terms in another order: a few ulps
TOL = dict(rtol=2e-5, atol=2e-6)


def _model(typ: str) -> OeMDM:
    torch.manual_seed(0)
    m = OeMDM(ModelConfig(vocab_size=V, seq_len=L + P, model_type=typ, n_layer=2, n_head=2, d_model=16,
                          cond_dim=8, block_size=4))
    with torch.no_grad():  # off the zero initialisation, so that attention and the heads matter
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


# (bd3lm is left out: its step noise has one time per block, so a padded batch draws more times than the
# unpadded one and the two cannot share noise)
@pytest.mark.parametrize("typ", ["mdlm", "genmd4", "lomdm", "ar", "oemdm-arm", "oemdm-block"])
def test_padded_batch_equals_unpadded_batch_per_real_token(typ: str) -> None:
    m = _model(typ)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (B, L), generator=g)
    pad = torch.full((B, P), 0)  # a real id as padding: only `valid` may tell it apart
    xp, valid = torch.cat([x, pad], 1), torch.cat([torch.ones(B, L, dtype=torch.bool),
                                                   torch.zeros(B, P, dtype=torch.bool)], 1)
    t = torch.rand(B, generator=g) * 0.9 + 0.05
    u = torch.rand(2, B, L + P, generator=g).clamp_min(1e-12)
    short = oemdm_loss(m, x, StepNoise(t, u[:, :, :L]), K=2)
    padded = oemdm_loss(m, xp, StepNoise(t, u), K=2, valid=valid)
    torch.testing.assert_close(padded.per_seq, short.per_seq, **TOL)
    torch.testing.assert_close(padded.loss, short.loss, **TOL)
    if padded.masked is not None:
        assert not bool(padded.masked[..., L:].any()), "a padding position was masked"
    # the evaluation estimate, same uniforms
    v = torch.rand(B, generator=g, dtype=torch.float64)
    mu = torch.rand(B, L + P, generator=g, dtype=torch.float64)
    a = sequence_bound(m, x, v, mu[:, :L])
    b = sequence_bound(m, xp, v, mu, valid)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("typ,lengths", [("oemdm-arm", (3, 8, 5)), ("oemdm-block", (4, 8, 6))])
def test_window_schedules_follow_each_sequences_real_length(typ: str, lengths: tuple[int, ...]) -> None:
    """Rows of different real lengths (a partial last block for length 6 with blocks of 4): each row's loss and
    bound equal those of the same sentence alone, unpadded; the windows are laid over its real positions."""
    m = _model(typ)
    g = torch.Generator().manual_seed(3)
    Lp = L + P
    x = torch.randint(0, V, (B, Lp), generator=g)
    valid = torch.arange(Lp)[None] < torch.tensor(lengths)[:, None]
    t = torch.rand(B, generator=g) * 0.9 + 0.05
    u = torch.rand(1, B, Lp, generator=g).clamp_min(1e-12)
    v = torch.rand(B, generator=g, dtype=torch.float64)
    mu = torch.rand(B, Lp, generator=g, dtype=torch.float64)
    padded = oemdm_loss(m, x, StepNoise(t, u), K=1, valid=valid)
    bound = sequence_bound(m, x, v, mu, valid)
    for i, n in enumerate(lengths):
        # the same row cut to its length, unpadded (valid=None: the plain schedule over n positions), except the
        # partial last block (6 with blocks of 4), which only the valid path accepts
        bs = m.cfg.block_size if typ == "oemdm-block" else 1
        alone_valid = None if n % bs == 0 else torch.ones(1, n, dtype=torch.bool)
        alone = oemdm_loss(m, x[i:i + 1, :n], StepNoise(t[i:i + 1], u[:, i:i + 1, :n]), K=1, valid=alone_valid)
        torch.testing.assert_close(padded.per_seq[:, i], alone.per_seq[:, 0], **TOL)
        b = sequence_bound(m, x[i:i + 1, :n], v[i:i + 1], mu[i:i + 1, :n], alone_valid)
        torch.testing.assert_close(bound[i:i + 1], b, rtol=1e-5, atol=1e-6)


def test_padding_mutation_is_detected() -> None:
    """Without `valid` the padded batch is scored on its padding too: the comparison above must see it."""
    m = _model("mdlm")
    x = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(2))
    xp = torch.cat([x, torch.zeros(B, P, dtype=torch.long)], 1)
    t = torch.full((B,), 0.9)
    u = torch.full((1, B, L + P), 0.5)
    short = oemdm_loss(m, x, StepNoise(t, u[:, :, :L]), K=1)
    wrong = oemdm_loss(m, xp, StepNoise(t, u), K=1)
    assert not torch.allclose(wrong.per_seq, short.per_seq, **TOL)


def test_task_data_trains_and_evaluates(tmp_path, capsys) -> None:
    from oemdm_spec.fast.trainer import train

    cfg = build_config({"data": "task:latents:N=4,P=4", "model": "mdlm", "steps": 4, "batch_size": 8,
                        "n_layer": 1, "d_model": 16, "n_head": 2, "cond_dim": 8, "eval_every": 0,
                        "final_eval_batches": 1, "eval_batch_size": 16, "threads": 1, "out_dir": str(tmp_path),
                        "name": "task", "warmup": 1})
    assert cfg.seq_len == 8 and cfg.tokenizer == "task"  # the task names its length and alphabet
    res = train(cfg, progress=False)
    assert res.eval is not None and 0 < res.eval.nelbo < 10
    assert cli_main(["eval", str(res.run_dir), "--max-batches", "1"]) == 0
    assert "latents" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="tokenizer"):
        build_config({"data": "task:latents:N=4,P=4", "tokenizer": "char"})


def _jsonl_dir(root, n_docs: int = 400) -> None:
    from oemdm_spec.data import load_embedded_corpus

    text = load_embedded_corpus()["train"][:200_000]
    root.mkdir()
    docs = [text[i * 400:(i + 1) * 400] for i in range(n_docs)]
    with open(root / "train.jsonl", "w") as f:
        for d in docs[:-40]:
            f.write(json.dumps({"text": d}) + "\n")
    with open(root / "validation.jsonl", "w") as f:
        for d in docs[-40:]:
            f.write(json.dumps({"text": d}) + "\n")


@pytest.mark.parametrize("protocol", ["wrap", "padded"])
def test_directory_corpus_trains_with_a_library_tokenizer(tmp_path, monkeypatch, protocol: str) -> None:
    from oemdm_spec.fast.trainer import train

    monkeypatch.setenv("OEMDM_CACHE", str(tmp_path / "cache"))
    _jsonl_dir(tmp_path / "docs")
    tok = "gpt2" if protocol == "wrap" else "bert-base-uncased"
    cfg = build_config({"data": str(tmp_path / "docs"), "tokenizer": tok, "protocol": protocol, "seq_len": 32,
                        "model": "lomdm", "steps": 3, "batch_size": 4, "n_layer": 1, "d_model": 16, "n_head": 2,
                        "cond_dim": 8, "eval_every": 0, "final_eval_batches": 1, "eval_batch_size": 8,
                        "threads": 1, "out_dir": str(tmp_path / "runs"), "name": protocol, "warmup": 1})
    res = train(cfg, progress=False)
    assert res.eval is not None and torch.isfinite(torch.tensor(res.eval.nelbo))
    if protocol == "padded":
        assert "padding excluded" in res.eval.estimator
    # zero-shot evaluation on the same corpus through the CLI, per token, character and byte
    assert cli_main(["eval", str(res.run_dir), "--max-batches", "1"]) == 0


def test_data_implies_its_protocol_unless_overridden() -> None:
    cfg = build_config({"data": "owt", "preset": "tiny"})
    assert (cfg.tokenizer, cfg.seq_len) == ("gpt2", 1024)
    cfg = build_config({"data": "lm1b", "seq_len": 64})
    assert (cfg.tokenizer, cfg.seq_len) == ("bert-base-uncased", 64)
    assert build_config({"preset": "gpt2-small"}).data == "owt"
    assert build_config({}).data == "embedded" and build_config({}).seq_len == 64


def test_a_path_keeps_the_presets_tokenizer(tmp_path) -> None:
    cfg = build_config({"preset": "gpt2-small", "data": str(tmp_path)})
    assert (cfg.tokenizer, cfg.seq_len) == ("gpt2", 1024)
    assert build_config({"data": str(tmp_path)}).tokenizer == "char"


def test_cli_sample_refuses_a_sampler_the_model_type_does_not_define(tmp_path, capsys) -> None:
    from oemdm_spec.fast.trainer import train

    cfg = build_config({"model": "ar", "steps": 1, "batch_size": 4, "n_layer": 1, "d_model": 16, "n_head": 2,
                        "cond_dim": 8, "eval_every": 0, "final_eval_batches": 1, "eval_batch_size": 8,
                        "threads": 1, "out_dir": str(tmp_path), "name": "ar", "warmup": 1, "sample_len": 8})
    res = train(cfg, progress=False)
    assert cli_main(["sample", str(res.run_dir), "--sampler", "grid", "--num", "1"]) == 2
    assert "not defined for model ar" in capsys.readouterr().err
