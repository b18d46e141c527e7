"""Bad input at every entry point: a clear ValueError (API) or `oemdm: error: ...` with exit code 2 (CLI), and
nothing written. CLI cases run in-process through ``oemdm_spec.cli.main`` (they must fail before training, so
each takes milliseconds); a few go through a real ``python -m oemdm_spec`` child for the exit status itself.

Reproduce one: ``python -m pytest proofs_tests/test_reliability_inputs.py -q -k <case>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oemdm_spec.cli import main

WORDS = ["the", "king", "shall", "speak", "of", "love", "and", "night", "to", "be", "or", "not", "my", "lord"]


def tiny(tmp: Path, **kw: object) -> list[str]:
    data = tmp / "corpus.txt"
    if not data.exists():
        data.write_text(" ".join(WORDS[(i * 7 + i // 3) % len(WORDS)] for i in range(3000)))
    base: dict[str, object] = dict(
        data=data, seq_len=16, n_layer=1, n_head=2, d_model=16, cond_dim=8, batch_size=4, steps=2, warmup=1,
        eval_every=0, ckpt_every=0, log_every=1, order_stats_every=0, final_eval_batches=1, eval_batch_size=8,
        sample_len=16, num_samples=1, name="bad", out_dir=tmp / "runs", max_minutes=0, threads=1,
    )
    base.update(kw)
    return [a for k, v in base.items() for a in (f"--{k}", str(v))]


def expect_exit_2(argv: list[str], capsys, *needles: str, out_dir: Path | None = None) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc} for {argv}: {err[-1500:]}"
    assert err.startswith("oemdm: error:") or "error:" in err, err
    for n in needles:
        assert n in err, (n, err)
    if out_dir is not None:
        assert not out_dir.exists(), f"bad input wrote {sorted(p.name for p in out_dir.rglob('*'))}"
    return err


@pytest.fixture(autouse=True)
def _grad_mode():
    yield
    torch.set_grad_enabled(True)  # cli.load_run turns autograd off process-wide


# ----------------------------------------------------------------------------------------------------------
# config values


BAD_CONFIG = [
    ({"c1": 0.5, "c2": 0.6}, "c1 > c2"),
    ({"c1": 0.6, "c2": 0.6}, "c1 > c2"),
    ({"c2": -0.1}, "c1 > c2"),
    ({"t_min": 0}, "t_min"),
    ({"t_min": 1}, "t_min"),
    ({"t_min": -0.5}, "t_min"),
    ({"t_min": "nan"}, "t_min"),
    ({"preset": "huge"}, "tiny, gpt2-small"),
    ({"model": "gpt"}, "mdlm, genmd4, lomdm, oemdm-fixed, bd3lm, ar, oemdm-arm, oemdm-block"),
    ({"model": "bd3lm", "seq_len": 18, "block_size": 4}, "multiple of block_size"),
    ({"steps": 0}, "steps"),
    ({"batch_size": -4}, "batch_size"),
    ({"d_model": 15}, "d_model"),
    ({"seq_len": "abc"}, "--seq_len"),
    ({"lr_decay": "linear"}, "lr_decay"),
]


@pytest.mark.parametrize("kw,needle", BAD_CONFIG, ids=[",".join(map(str, k.items())) for k, _ in BAD_CONFIG])
def test_bad_config_value(tmp_path, capsys, kw, needle):
    expect_exit_2(["train", *tiny(tmp_path, **kw)], capsys, needle, out_dir=tmp_path / "runs")


BAD_OPTIMISER = [
    ({"lr": -1e-3}, "lr"),
    ({"lr": "nan"}, "lr"),
    ({"head_lr": -1}, "head_lr"),
    ({"ema": 1.5}, "ema"),
    ({"beta2": 1.5}, "beta2"),
    ({"tokenizer": "gpt5"}, "tokenizer"),
]


@pytest.mark.parametrize("kw,needle", BAD_OPTIMISER, ids=[",".join(map(str, k.items())) for k, _ in BAD_OPTIMISER])
def test_bad_optimiser_or_tokenizer_value(tmp_path, capsys, kw, needle):
    expect_exit_2(["train", *tiny(tmp_path, **kw)], capsys, needle, out_dir=tmp_path / "runs")


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../escape"])
def test_run_name_must_stay_inside_out_dir(tmp_path, capsys, name):
    """`--name ..` would write the run into out_dir's parent; `a/b` below a directory nobody asked for."""
    expect_exit_2(["train", *tiny(tmp_path, name=name)], capsys, "name", repr(name), out_dir=tmp_path / "runs")
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "escape").exists()


def test_unknown_key_names_the_closest_valid_key(tmp_path, capsys):
    expect_exit_2(["train", "--stpes", "3"], capsys, "--stpes", "did you mean --steps")
    expect_exit_2(["train", "--learning_rate", "3"], capsys, "--learning_rate")
    expect_exit_2(["train", "--steps"], capsys, "needs a value")


def test_config_file_with_unknown_key(tmp_path):
    from oemdm_spec.fast.config import ConfigError, TrainConfig

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": "mdlm", "stpes": 100}))
    with pytest.raises(ConfigError, match=r"stpes.*steps"):
        TrainConfig.load(str(path))


def test_checkpoint_config_with_unknown_key(tmp_path, capsys):
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    train(build_config(parse_overrides(tiny(tmp_path, model="mdlm"))), progress=False, final_eval=False)
    run = tmp_path / "runs" / "bad"
    state_path = next((run / "checkpoints").glob("step_*")) / "state.json"
    state = json.loads(state_path.read_text())
    state["config"]["lr_deacy"] = "constant"
    state_path.write_text(json.dumps(state))
    expect_exit_2(["train", "--resume", str(run), "--steps", "3"], capsys, "lr_deacy", "lr_decay")


# ----------------------------------------------------------------------------------------------------------
# data


@pytest.mark.parametrize("text", ["", "short text"], ids=["empty", "shorter-than-one-sequence"])
def test_empty_or_short_corpus(tmp_path, capsys, text):
    data = tmp_path / "small.txt"
    data.write_text(text)
    expect_exit_2(["train", *tiny(tmp_path, data=data)], capsys, "small.txt", out_dir=tmp_path / "runs")


def test_missing_data_file_writes_nothing(tmp_path, capsys):
    expect_exit_2(["train", *tiny(tmp_path, data=tmp_path / "nope.txt")], capsys, "nope.txt",
                  out_dir=tmp_path / "runs")


def test_odd_characters_in_data_map_to_unk_and_train(tmp_path, capsys):
    """Characters outside the vocabulary (control chars, emoji, NUL) become the unk id, never an id ≥ V."""
    from oemdm_spec.data import PackedDataset, get_tokenizer

    tok = get_tokenizer("char")
    odd = "".join(chr(c) for c in (0, 1, 7, 0x2028, 0x1F600, 0xFFFF, 0x10FFFF)) * 40 + "the king " * 40
    ids = tok.encode(odd)
    assert 0 <= min(ids) and max(ids) < tok.vocab_size
    ds = PackedDataset(ids, 16, vocab_size=tok.vocab_size)
    batch = ds.get_batch(0, 4, 0)
    assert int(batch.min()) >= 0 and int(batch.max()) < tok.vocab_size


@pytest.mark.parametrize("ids", [[0, 1, 85, 2] * 8, [0, -1, 2, 3] * 8], ids=["id>=V", "id<0"])
def test_token_ids_out_of_range_in_data(ids):
    from oemdm_spec.data import PackedDataset

    with pytest.raises(ValueError, match="outside"):
        PackedDataset(ids, 8, vocab_size=85)


@pytest.mark.parametrize("ids", [[], [1, 2, 3]], ids=["empty", "short"])
def test_token_dataset_too_small(ids):
    from oemdm_spec.data import PackedDataset

    with pytest.raises(ValueError, match="seq_len|empty"):
        PackedDataset(ids, 8, vocab_size=10)


# ----------------------------------------------------------------------------------------------------------
# mask id, prompts and infilling positions


def test_mask_id_inside_the_vocabulary():
    from oemdm_spec.fast.kernels import forward_mask
    from oemdm_spec.reference.distributions import ForwardMasking

    x = torch.tensor([[0, 1, 2, 3]])
    with pytest.raises(ValueError, match="mask_id"):  # 3 is a real token here, so mask id 2 collides
        forward_mask(x, torch.tensor([0.5]), torch.ones(1, 4), K=1, seed=0, mask_id=2, backend="torch")
    with pytest.raises(ValueError, match=r"x must lie in \[0, 2\]"):
        ForwardMasking(x, torch.full((1, 4), 0.5, dtype=torch.float64), mask_id=2)


def test_reference_infilling_positions_out_of_range():
    from oemdm_spec.reference.denoisers import TabularDenoiser
    from oemdm_spec.reference.sampling import ancestral_sample
    from oemdm_spec.reference.schedules import MDLMSchedule

    den = TabularDenoiser(3, 2)
    for fixed, needle in (({3: 0}, "position 3"), ({-1: 0}, "position -1"), ({0: 2}, "token 2"),
                          ({0: -1}, "token -1")):
        with pytest.raises(ValueError, match=needle):
            ancestral_sample(den, MDLMSchedule(3), vocab_size=2, grid=4, fixed=fixed)


@pytest.fixture(scope="module")
def small_model():
    from oemdm_spec.fast.model import ModelConfig, OeMDM

    torch.manual_seed(0)
    return OeMDM(ModelConfig(vocab_size=6, seq_len=8, model_type="mdlm", n_layer=1, n_head=2, d_model=16,
                             cond_dim=8))


@pytest.mark.parametrize("bad", [7, -1, 100], ids=["V+1", "-1", "100"])
def test_fast_sample_init_out_of_range(small_model, bad):
    from oemdm_spec.fast.sample import sample

    init = torch.full((1, 8), 6)
    init[0, 3] = bad
    with pytest.raises(ValueError, match="init"):
        sample(small_model, 1, init=init)


@pytest.mark.parametrize("kw", [{"num": -1}, {"length": -3}], ids=["num-1", "len-3"])
def test_fast_sample_bad_sizes(small_model, kw):
    from oemdm_spec.fast.sample import sample

    args = {"num": 1, **kw}
    with pytest.raises(ValueError, match=next(iter(kw))):
        sample(small_model, args.pop("num"), **args)


# ----------------------------------------------------------------------------------------------------------
# eval / sample / plot through the CLI


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from oemdm_spec.fast.config import build_config, parse_overrides
    from oemdm_spec.fast.trainer import train

    tmp = tmp_path_factory.mktemp("inputs")
    train(build_config(parse_overrides(tiny(tmp, model="mdlm", name="ok"))), progress=False, final_eval=False)
    return tmp / "runs" / "ok"


def test_cli_rejects_missing_runs_and_files(tmp_path, capsys, run_dir):
    expect_exit_2(["eval", str(tmp_path / "none")], capsys, "no checkpoint found")
    expect_exit_2(["sample", str(tmp_path / "none")], capsys, "no checkpoint found")
    expect_exit_2(["plot", str(tmp_path / "none")], capsys, "no log.csv")
    expect_exit_2(["eval", str(run_dir), "--text", str(tmp_path / "none.txt")], capsys, "no such file")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    expect_exit_2(["eval", str(run_dir), "--text", str(empty)], capsys, "fewer than seq_len")
    expect_exit_2(["sample", str(run_dir), "--sampler", "beam"], capsys, "--sampler must be one of")
    expect_exit_2(["eval", str(run_dir), "--split", "dev"], capsys, "invalid choice")
    assert main([]) == 2 and "COMMAND" in capsys.readouterr().out  # no command: the usage, exit 2
    expect_exit_2(["eval"], capsys, "run")


SAMPLE_EVAL_BAD = [
    (["sample", "{run}", "--num", "0"], "--num"),
    (["sample", "{run}", "--num", "-1"], "--num"),
    (["sample", "{run}", "--length", "-3"], "--length"),
    (["sample", "{run}", "--steps", "-1", "--sampler", "grid"], "--steps"),
    (["eval", "{run}", "--batch-size", "0"], "--batch-size"),
    (["eval", "{run}", "--repeats", "0"], "--repeats"),
    (["eval", "{run}", "--max-batches", "-1"], "--max-batches"),
]


@pytest.mark.parametrize("argv,needle", SAMPLE_EVAL_BAD, ids=[" ".join(a[2:])[:30] for a, _ in SAMPLE_EVAL_BAD])
def test_cli_sample_eval_bad_sizes(run_dir, capsys, argv, needle):
    expect_exit_2([a.format(run=run_dir) for a in argv], capsys, needle)


def test_real_process_exit_codes(tmp_path):
    """The console entry point itself: exit status 2 and one message line, nothing written."""
    env = {**os.environ, "OEMDM_KERNEL_BACKEND": "torch"}
    for argv, needle in ((["train", "--stepz", "3"], "did you mean --steps"),
                         (["train", "--model", "gpt", "--out_dir", str(tmp_path / "r")], "mdlm, genmd4, lomdm")):
        p = subprocess.run([sys.executable, "-m", "oemdm_spec", *argv], capture_output=True, text=True,
                           timeout=60, env=env)
        assert p.returncode == 2 and needle in p.stderr, (argv, p.returncode, p.stderr[-1000:])
        assert "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()
