"""TrainConfig / LossConfig: validation naming the field (and file:line), overrides, round trips."""

from __future__ import annotations

import json

import pytest

from safegen_train.config import ConfigError, LossConfig, TrainConfig, apply_overrides, parse_override


def test_defaults_are_the_released_settings():
    cfg = TrainConfig(model="m", train_data="d")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lr, cfg.optimizer) == (16, 1.0, 0.1, 1e-3, "adam")
    assert cfg.lora_target_modules == ["k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding"]
    assert (cfg.reference, cfg.patience, cfg.epochs, cfg.batch_size) == ("frozen", 5, 50, 16)
    assert cfg.loss.logit_scale == 100.0 and cfg.loss.vision_patch_unsafe == 0.0


def test_json_round_trip(tmp_path):
    cfg = TrainConfig(model="m", train_data="d", loss=LossConfig(vision_patch_unsafe=0.5), towers="text")
    cfg.save(tmp_path / "c.json")
    again = TrainConfig.load(tmp_path / "c.json")
    assert again == cfg and isinstance(again.loss, LossConfig)


def test_yaml_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\ntrain_data: d\nbatch_sise: 8\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: unknown field 'batch_sise' \(did you mean 'batch_size'\?\)"):
        TrainConfig.load(path)
    path.write_text("model: m\nlr: -1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: lr must be > 0"):
        TrainConfig.load(path)
    path.write_text("model: m\nepochs: many\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: field 'epochs': expected an integer"):
        TrainConfig.load(path)
    path.write_text("loss:\n  text_safe: -2\n")
    with pytest.raises(ConfigError, match=r"loss.text_safe must be a number >= 0"):
        TrainConfig.load(path)
    path.write_text("towers: all\n")
    with pytest.raises(ConfigError, match="towers.*must be one of"):
        TrainConfig.load(path)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="cache_reference must be false with reference: detached"):
        TrainConfig(reference="detached")
    with pytest.raises(ConfigError, match="batch_size .* divisible by grad_accum_steps"):
        TrainConfig(batch_size=6, grad_accum_steps=4)
    with pytest.raises(ConfigError, match="model is required"):
        TrainConfig().require_sources()


def test_overrides_parse_and_nest():
    assert parse_override("lr=1e-4") == ("lr", 1e-4)
    assert parse_override("loss.vision_patch_unsafe=0.5") == ("loss.vision_patch_unsafe", 0.5)
    merged = apply_overrides({"loss": {"text_safe": 0.2}}, dict([parse_override("loss.logit_scale=50")]))
    cfg = TrainConfig.from_dict(merged)
    assert cfg.loss.text_safe == 0.2 and cfg.loss.logit_scale == 50.0
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lr")


def test_json_file_line_numbers(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "m", "seed": 1, "optimiser": "adam"}, indent=2))
    with pytest.raises(ConfigError, match=r"c.json:4: unknown field 'optimiser' \(did you mean 'optimizer'\?\)"):
        TrainConfig.load(path)
