"""Config: presets, --key value overrides, errors that name the key and the closest valid one."""

from __future__ import annotations

import pytest

from oemdm_spec.fast.config import PRESETS, ConfigError, TrainConfig, build_config, parse_overrides


def test_defaults_are_tiny_lomdm():
    cfg = build_config({})
    assert cfg.model == "lomdm" and cfg.preset == "tiny"
    assert (cfg.c1, cfg.c2, cfg.K, cfg.t_min) == (0.7, 0.65, 2, 1e-3)
    for k, v in PRESETS["tiny"].items():
        assert getattr(cfg, k) == v


def test_overrides_parse_types_and_win_over_preset():
    ov = parse_overrides(["--steps", "17", "--lr=3e-4", "--time-conditioning", "yes", "--model", "mdlm"])
    assert ov == {"steps": 17, "lr": 3e-4, "time_conditioning": True, "model": "mdlm"}
    cfg = build_config({**ov, "preset": "gpt2-small"})
    assert cfg.steps == 17 and cfg.lr == 3e-4 and cfg.n_layer == 12 and cfg.d_model == 768


def test_gpt2_small_preset_is_the_papers_setup():
    cfg = build_config({"preset": "gpt2-small"})
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.seq_len, cfg.batch_size) == (12, 768, 12, 1024, 512)
    assert (cfg.lr, cfg.warmup, cfg.tokenizer) == (3e-4, 2500, "gpt2")


@pytest.mark.parametrize("args,needle", [
    (["--stepz", "3"], "--stepz; did you mean --steps?"),
    (["--learning_rate", "3"], "unknown config key --learning_rate"),
    (["--steps", "three"], "--steps: expected int"),
    (["--steps"], "--steps needs a value"),
    (["steps", "3"], "expected --key value"),
])
def test_bad_overrides_name_the_key(args, needle):
    with pytest.raises(ConfigError) as e:
        parse_overrides(args)
    assert needle in str(e.value)


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean --batch_size"):
        parse_overrides(["--batchsize", "8"])


@pytest.mark.parametrize("ov,needle", [
    ({"c1": 0.5, "c2": 0.6}, "c1 > c2"),
    ({"c2": -0.1}, "c1 > c2"),
    ({"model": "gpt"}, "model must be one of"),
    ({"preset": "huge"}, "preset must be one of"),
    ({"model": "bd3lm", "seq_len": 30, "block_size": 4}, "multiple of block_size"),
    ({"d_model": 100, "n_head": 3}, "even-sized heads"),
])
def test_invalid_configs_rejected(ov, needle):
    with pytest.raises(ConfigError, match=needle):
        build_config(ov)


def test_config_roundtrip(tmp_path):
    cfg = build_config({"steps": 5, "model": "genmd4"})
    cfg.save(str(tmp_path / "c.json"))
    assert TrainConfig.load(str(tmp_path / "c.json")) == cfg
