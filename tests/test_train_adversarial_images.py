"""Adversarial image rounds in training: the PGD bound, the attack's objective, a seeded fit, config checks."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import base_config, make_jsonl

from safegen_train.adversarial import ImageAdversary
from safegen_train.config import ConfigError, TrainConfig
from safegen_train.data import Collator, PairDataset, load_records
from safegen_train.model import create_module, load_clip
from safegen_train.trainer import accumulate_gradients, fit

EPS = 8 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(train_world, n=4, **overrides):
    cfg = base_config(train_world["root"], train_world["clip"], train_world["train"], **overrides)
    loaded = load_clip(cfg.model)
    ds = PairDataset(load_records(cfg.train_data))
    module = create_module(cfg, loaded, has_images=True)
    batch = Collator(loaded.tokenizer, loaded.image_processor, 16)([ds[i] for i in range(n)])
    return cfg, loaded, module, batch


def _adversary(cfg, loaded):
    adversary = ImageAdversary.from_config(cfg, loaded.image_processor)
    assert adversary is not None
    return adversary


def _perturb_full_model(module, cfg):
    """Make the trained tower differ from the reference, so the attack has something to undo."""
    with torch.no_grad():
        for name, p in module.net.named_parameters():
            if p.requires_grad and name.startswith("vision_model."):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_perturbation_is_inside_the_linf_ball_and_lowers_the_attack_objective(train_world, finetune):
    cfg, loaded, module, batch = _setup(
        train_world, finetune=finetune, adversarial_images_eps=EPS, adversarial_images_steps=5
    )
    if finetune == "full":
        _perturb_full_model(module, cfg)
    else:  # LoRA B starts at zero: give the adapters weight so the trained tower differs from the reference
        with torch.no_grad():
            for name, p in module.net.named_parameters():
                if "lora_B" in name and "vision_model" in name:
                    p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    adversary = _adversary(cfg, loaded)
    pixels = batch["unsafe_image_pixels"]
    module.train()
    adv, before, after = adversary.perturb(module, pixels, torch.Generator().manual_seed(0))
    x0, x1 = adversary.to_unit(pixels), adversary.to_unit(adv)
    assert (x1 - x0).abs().max().item() <= EPS + 1e-5  # the L-inf bound, in [0, 1] pixels
    assert (x1 - x0).abs().max().item() > EPS / 2  # and it moved
    assert x1.min() >= 0 and x1.max() <= 1
    assert before.shape == after.shape == (pixels.shape[0],)
    assert after.mean() < 0.9 * before.mean(), (before, after)  # the attack lowers its objective
    assert module.training  # train mode restored
    assert all(p.grad is None for p in module.parameters())  # no parameter gradient written


def test_pgd_moves_a_frozen_tower_away_from_its_clean_features(train_world):
    """Against a tower equal to the reference (step 0 of a fit) the clean image is the attack's optimum;
    the perturbation then raises what the redirection term sees: distance from the clean features."""
    cfg, loaded, module, batch = _setup(
        train_world, finetune="full", adversarial_images_eps=EPS, adversarial_images_steps=3
    )
    adversary = _adversary(cfg, loaded)
    pixels = batch["unsafe_image_pixels"]
    adv, before, after = adversary.perturb(module, pixels, torch.Generator().manual_seed(1))
    torch.testing.assert_close(before, torch.zeros_like(before), atol=1e-6, rtol=0)
    assert (after > 0).all()


def test_apply_replaces_the_chosen_fraction_and_is_seeded(train_world):
    cfg, loaded, module, batch = _setup(
        train_world, finetune="full", adversarial_images_eps=EPS, adversarial_images_fraction=0.5
    )
    adversary = _adversary(cfg, loaded)
    out1 = adversary.apply(module, batch, adversary.generator(3, 0, 0))
    out2 = adversary.apply(module, batch, adversary.generator(3, 0, 0))
    out3 = adversary.apply(module, batch, adversary.generator(4, 0, 0))
    changed = (out1["unsafe_image_pixels"] != batch["unsafe_image_pixels"]).flatten(1).any(1)
    assert int(changed.sum()) == 2  # half of 4
    torch.testing.assert_close(out1["unsafe_image_pixels"], out2["unsafe_image_pixels"], rtol=0, atol=0)
    assert not torch.equal(out1["unsafe_image_pixels"], out3["unsafe_image_pixels"])
    torch.testing.assert_close(out1["safe_image_pixels"], batch["safe_image_pixels"], rtol=0, atol=0)
    metrics = adversary.take_metrics()
    assert metrics["adv/images"] == 6
    assert metrics["adv/objective_after"] >= 0
    assert adversary.take_metrics() == {"adv/images": 0}


def test_accumulate_gradients_trains_on_the_perturbed_images(train_world):
    cfg, loaded, module, batch = _setup(train_world, finetune="full", adversarial_images_eps=EPS)
    from accelerate import Accelerator

    from safegen_train.losses import SafeCLIPLoss

    accelerator = Accelerator(cpu=True)
    adversary = _adversary(cfg, loaded)
    loss_fn = SafeCLIPLoss(cfg.loss)
    clean = accumulate_gradients(accelerator, module, loss_fn, [batch])
    module.zero_grad(set_to_none=True)
    attacked = accumulate_gradients(accelerator, module, loss_fn, [batch], adversary=adversary, step=0)
    assert adversary.stats.images == 4
    # clean references are equal at step 0, so only the unsafe-image terms can differ
    assert attacked["vision_unsafe"] > clean["vision_unsafe"]
    assert attacked["text_unsafe"] == pytest.approx(clean["text_unsafe"])


def _fit(train_world, name, **overrides):
    cfg = base_config(
        train_world["root"],
        train_world["clip"],
        train_world["train"],
        output_dir=str(train_world["root"] / name),
        finetune="full",
        adversarial_images_eps=EPS,
        adversarial_images_steps=2,
        adversarial_images_fraction=0.5,
        max_steps=3,
        **overrides,
    )
    result = fit(cfg)
    lines = [json.loads(x) for x in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    state = result.module.trainable_state_dict()
    return lines, state


def test_fit_with_adversarial_images_reproduces_and_records_metrics(train_world):
    lines_a, state_a = _fit(train_world, "run_a", loss={"vision_patch_unsafe": 1.0})
    lines_b, state_b = _fit(train_world, "run_b", loss={"vision_patch_unsafe": 1.0})
    train = [r for r in lines_a if r["split"] == "train"]
    assert [r["adv/images"] for r in train] == [2, 2, 2]  # half of the 4 unsafe images, every step
    assert train[-1]["adv/images_total"] == 6
    assert all(r["adv/objective_after"] >= 0 for r in train)
    assert train[-1]["adv/objective_after"] < train[-1]["adv/objective_before"]  # tower has moved by step 3
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)
    strip = [{k: v for k, v in r.items() if k != "samples_per_s"} for r in lines_a]
    assert strip == [{k: v for k, v in r.items() if k != "samples_per_s"} for r in lines_b]


def test_fit_every_n_steps(train_world):
    lines, _ = _fit(train_world, "run_every", adversarial_images_every=2)
    assert [r["adv/images"] for r in lines if r["split"] == "train"] == [2, 0, 2]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"adversarial_images_eps": -0.01}, "adversarial_images_eps"),
        ({"adversarial_images_eps": 2.0}, "adversarial_images_eps"),
        ({"adversarial_images_eps": EPS, "adversarial_images_steps": 0}, "adversarial_images_steps"),
        ({"adversarial_images_fraction": 0.0}, "adversarial_images_fraction"),
        ({"adversarial_images_fraction": 1.5}, "adversarial_images_fraction"),
        ({"adversarial_images_every": 0}, "adversarial_images_every"),
        ({"adversarial_images_eps": EPS, "towers": "text"}, "adversarial_images_eps"),
        (
            {"adversarial_images_eps": EPS, "reference": "detached", "cache_reference": False},
            "adversarial_images_eps",
        ),
    ],
)
def test_config_refuses_bad_values(overrides, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig(model="m", train_data="d", **overrides)
    message = str(info.value)
    assert message.startswith(field) and "\n" not in message


def test_off_by_default_and_steps_unchecked_when_off():
    cfg = TrainConfig(model="m", train_data="d", adversarial_images_steps=0)
    assert cfg.adversarial_images_eps == 0
    assert ImageAdversary.from_config(cfg, None) is None


def test_fit_refuses_text_only_data(train_world, tmp_path):
    text = make_jsonl(tmp_path / "text", 8, images=False)
    cfg = base_config(tmp_path, train_world["clip"], text, adversarial_images_eps=EPS)
    with pytest.raises(ConfigError, match="adversarial_images_eps"):
        fit(cfg)
