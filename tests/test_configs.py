"""The shipped training configs: the released one matches the release, the recommended one explains every change."""

from __future__ import annotations

from pathlib import Path

from safegen_train.config import LossConfig, TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _load(name: str) -> TrainConfig:
    return TrainConfig.load(CONFIGS / name)


def test_released_config_is_the_release():
    cfg = _load("safeclip_released.yaml")
    assert cfg.model == "openai/clip-vit-large-patch14" and cfg.towers == "both" and cfg.finetune == "lora"
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (16, 1.0, 0.1)
    assert sorted(cfg.lora_target_modules) == sorted(["k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding"])
    # the released code's reference: the live model under no_grad with dropout on, never cached
    assert cfg.reference == "detached" and cfg.cache_reference is False
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.optimizer, cfg.weight_decay) == (16, 50, 1e-3, "adam", 0.0)
    assert (cfg.lr_schedule, cfg.warmup_steps, cfg.max_grad_norm, cfg.mixed_precision) == ("constant", 0, None, "no")
    assert cfg.patience == 5 and cfg.max_text_length == 77
    released_terms = LossConfig()
    for term in (
        "text_safe",
        "text_unsafe",
        "vision_safe",
        "vision_unsafe",
        "safe_text_vs_ref_image",
        "unsafe_text_vs_ref_image",
        "ref_text_vs_safe_image",
        "ref_text_vs_unsafe_image",
    ):
        assert getattr(cfg.loss, term) == getattr(released_terms, term), term
    assert cfg.loss.combination == "released" and cfg.loss.logit_scale == 100.0
    assert cfg.loss.vision_patch_unsafe == cfg.loss.text_tokens_unsafe == 0.0


def _commented_keys(text: str) -> set[str]:
    """Top-level keys preceded by a '# Differs' comment block."""
    keys, in_differs = set(), False
    for line in text.splitlines():
        if line.startswith("# Differs"):
            in_differs = True
        elif line.startswith("#"):
            continue
        elif line and not line.startswith(" ") and ":" in line:
            if in_differs:
                keys.add(line.split(":")[0])
            in_differs = False
    return keys


def test_recommended_config_explains_each_difference():
    released, recommended = _load("safeclip_released.yaml"), _load("safeclip_recommended.yaml")
    differ = {k for k, v in recommended.to_dict().items() if k not in ("output_dir",) and v != released.to_dict()[k]}
    assert differ  # it does recommend something
    assert differ == _commented_keys((CONFIGS / "safeclip_recommended.yaml").read_text())


def test_example_config_loads_and_says_which_settings_are_released():
    cfg = _load("train_safeclip_example.yaml")
    text = (CONFIGS / "train_safeclip_example.yaml").read_text()
    assert cfg.reference == "frozen" and "safeclip_released.yaml" in text and "released settings (" not in text
