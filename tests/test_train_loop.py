"""The training module and loop: LoRA/full trainability, references, accumulation, resume,
intended direction of movement, text-only training, cached references, hidden-state terms."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import base_config, make_jsonl

from safegen_train.data import Collator, PairDataset, load_records
from safegen_train.losses import TERMS as RELEASED_TERMS
from safegen_train.losses import SafeCLIPLoss
from safegen_train.model import create_module, load_clip
from safegen_train.trainer import accumulate_gradients, fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_only(train_world):
    """The training set's texts without images, beside it."""
    return make_jsonl(train_world["root"] / "text", 8, images=False)


def _module_and_batch(train_world, n=4, **cfg_overrides):
    cfg = base_config(train_world["root"], train_world["clip"], train_world["train"], **cfg_overrides)
    loaded = load_clip(cfg.model)
    records = load_records(cfg.train_data)
    ds = PairDataset(records)
    module = create_module(cfg, loaded, has_images=ds.has_safe_image)
    batch = Collator(loaded.tokenizer, loaded.image_processor, 16)([ds[i] for i in range(n)])
    return cfg, loaded, module, batch


def test_lora_model_equals_base_at_step_zero(train_world):
    from transformers import CLIPModel

    _, _, module, batch = _module_and_batch(train_world)
    base = CLIPModel.from_pretrained(str(train_world["clip"])).eval()
    module.train()  # LoRA dropout on: B = 0 still gives the base exactly
    feats = module(batch)
    with torch.no_grad():
        t = base.get_text_features(input_ids=batch["unsafe_input_ids"], attention_mask=batch["unsafe_attention_mask"])
        v = base.get_image_features(pixel_values=batch["unsafe_image_pixels"])
    t = getattr(t, "pooler_output", t)
    v = getattr(v, "pooler_output", v)
    torch.testing.assert_close(feats["unsafe_text"], t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats["unsafe_image"], v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats["ref_text"], feats["safe_text"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_gradients_reach_only_trainable_parameters(train_world, finetune):
    _, _, module, batch = _module_and_batch(train_world, finetune=finetune, towers="text")
    module.train()
    SafeCLIPLoss()(**module(batch))["loss"].backward()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable
    if finetune == "lora":
        assert all("lora_" in n and "text_model" in n for n in trainable)
    else:
        assert all(n.startswith(("net.text_model.", "net.text_projection.")) for n in trainable)
    for name, p in module.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # LoRA A gets no gradient at step 0 (B = 0), but B does
    if finetune == "lora":
        assert any("lora_B" in n and module.get_parameter(n).grad.abs().sum() > 0 for n in trainable)


def test_gradient_accumulation_is_mean_of_micro_batch_gradients(train_world):
    from accelerate import Accelerator

    _, _, module, batch = _module_and_batch(train_world, n=4, lora_dropout=0.0)
    module.train()
    loss_fn = SafeCLIPLoss()
    micro = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    params = [p for p in module.parameters() if p.requires_grad]
    # each micro-batch on its own
    grads = []
    for mb in micro:
        module.zero_grad()
        loss_fn(**module(mb))["loss"].backward()
        grads.append([p.grad.clone() for p in params])
    module.zero_grad()
    accelerator = Accelerator(cpu=True)
    parts = accumulate_gradients(accelerator, module, loss_fn, micro)
    for p, g0, g1 in zip(params, *grads, strict=True):
        torch.testing.assert_close(p.grad, (g0 + g1) / 2, rtol=1e-5, atol=1e-7)
    assert set(parts) >= {"loss", "text_unsafe", "ref_text_vs_unsafe_image"}


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item()


def test_training_moves_unsafe_toward_safe_references_and_keeps_safe(train_world, tmp_path):
    from safegen_train.config import LossConfig

    # A random tiny CLIP has no text-image alignment, so the InfoNCE terms would mostly align the
    # towers with each other; the direction under test is that of the redirection/preservation terms.
    no_infonce = LossConfig(
        safe_text_vs_ref_image=0, unsafe_text_vs_ref_image=0, ref_text_vs_safe_image=0, ref_text_vs_unsafe_image=0
    )
    cfg = base_config(
        tmp_path, train_world["clip"], train_world["train"], epochs=8, lr=3e-2, loss=no_infonce
    )  # 16 steps
    _, _, module0, batch = _module_and_batch(train_world, n=8)
    with torch.no_grad():
        before = module0.eval()(batch)
    result = fit(cfg)
    module = result.module.eval()
    with torch.no_grad():
        after = module(batch)
        ref_after = module.encode_reference(batch)
    # the frozen references did not move
    torch.testing.assert_close(ref_after["ref_text"], before["ref_text"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref_after["ref_image"], before["ref_image"], rtol=1e-5, atol=1e-6)
    # unsafe text/image moved toward their safe references
    assert _cos(after["unsafe_text"], before["ref_text"]) > _cos(before["unsafe_text"], before["ref_text"]) + 0.02
    assert _cos(after["unsafe_image"], before["ref_image"]) > _cos(before["unsafe_image"], before["ref_image"]) + 0.005
    # safe inputs stayed close to where they were
    assert _cos(after["safe_text"], before["ref_text"]) > 0.95
    assert _cos(after["safe_image"], before["ref_image"]) > 0.95
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 17)) and all("text_unsafe" in x for x in lines)


@pytest.mark.parametrize("threads", [1, 3])
def test_resume_equals_uninterrupted_run(train_world, tmp_path, threads):
    # Bit for bit at any thread count: both runs use the same count, so every reduction splits the
    # same way. (Runs at *different* counts differ in the last bits, ~1e-8 here: not compared.)
    torch.set_num_threads(threads)
    kwargs = dict(epochs=3, save_every_steps=2, lr=1e-2)  # 6 steps, dropout on
    try:
        full = fit(base_config(tmp_path / "a", train_world["clip"], train_world["train"], **kwargs))
        part = fit(base_config(tmp_path / "b", train_world["clip"], train_world["train"], max_steps=3, **kwargs))
        assert part.global_step == 3
        resumed = fit(
            base_config(tmp_path / "b", train_world["clip"], train_world["train"], resume="latest", **kwargs)
        )
    finally:
        torch.set_num_threads(1)
    assert resumed.global_step == 6
    a, b = full.module.trainable_state_dict(), resumed.module.trainable_state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the interruption really happened: the partial run stopped at a different point
    assert any(not torch.allclose(a[k], part.module.trainable_state_dict()[k]) for k in a)


def test_text_only_training(train_world, text_only, tmp_path):
    cfg = base_config(tmp_path, train_world["clip"], text_only, epochs=2, export_on_finish=True)
    result = fit(cfg)
    assert result.module.towers == ["text"]
    names = set(result.module.trainable_state_dict())
    assert names and all("text_model" in n for n in names)
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"text_safe", "text_unsafe"} <= set(line) and "vision_safe" not in line
    from transformers import CLIPModel

    base = CLIPModel.from_pretrained(str(train_world["clip"]))
    exported = CLIPModel.from_pretrained(str(result.export_dir))
    torch.testing.assert_close(exported.vision_model.state_dict(), base.vision_model.state_dict())
    assert not torch.allclose(
        exported.text_model.encoder.layers[0].self_attn.k_proj.weight,
        base.text_model.encoder.layers[0].self_attn.k_proj.weight,
    )


def test_cached_and_uncached_references_give_the_same_first_step(train_world, tmp_path):
    first = {}
    for cache in (True, False):
        fit(
            base_config(
                tmp_path / str(cache), train_world["clip"], train_world["train"], max_steps=1, cache_reference=cache
            )
        )
        first[cache] = json.loads((tmp_path / str(cache) / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for k in ("loss", "text_unsafe", "ref_text_vs_unsafe_image"):
        assert first[True][k] == pytest.approx(first[False][k], rel=1e-4)


def test_hidden_state_terms_train_and_are_logged(train_world, tmp_path):
    from safegen_train.config import LossConfig

    loss = LossConfig(vision_patch_unsafe=1.0, vision_patch_safe=0.5, text_tokens_safe=0.5, text_tokens_unsafe=0.5)
    fit(base_config(tmp_path, train_world["clip"], train_world["train"], max_steps=2, loss=loss))
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for name in ("vision_patch_unsafe", "vision_patch_safe", "text_tokens_safe", "text_tokens_unsafe"):
        assert first[name] >= -1e-6
    assert first["vision_patch_safe"] == pytest.approx(0.0, abs=1e-6)  # LoRA starts at the reference
    # the patch term alone (paper terms off) pulls the unsafe image's inner-layer tokens to the safe twin's
    only_patch = LossConfig(
        **{name: 0.0 for name in LossConfig().to_dict() if name in RELEASED_TERMS}, vision_patch_unsafe=1.0
    )
    cfg = base_config(tmp_path / "p", train_world["clip"], train_world["train"], epochs=10, lr=1e-2, loss=only_patch)
    result = fit(cfg)
    first = json.loads((tmp_path / "p" / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"vision_patch_unsafe", "text_safe", "loss"}
    _, _, _, batch = _module_and_batch(train_world, n=8)
    module = result.module.eval()
    with torch.no_grad(), module.reference_encoders() as ref:
        _, unsafe_before = module.encode_image(ref, batch["unsafe_image_pixels"], tokens=True)
        _, safe_ref = module.encode_image(ref, batch["safe_image_pixels"], tokens=True)  # (8, 16, 32)
    with torch.no_grad():
        _, unsafe_after = module.encode_image(module.clip, batch["unsafe_image_pixels"], tokens=True)
    dist_before = 1 - torch.nn.functional.cosine_similarity(unsafe_before, safe_ref, dim=-1).mean()
    dist_after = 1 - torch.nn.functional.cosine_similarity(unsafe_after, safe_ref, dim=-1).mean()
    assert dist_after < 0.92 * dist_before  # ~13% closer in 20 LoRA steps (alpha/r = 1/16)


def test_full_finetune_with_frozen_copy_and_detached_reference(train_world, tmp_path):
    r = fit(
        base_config(tmp_path / "f", train_world["clip"], train_world["train"], max_steps=2, finetune="full", lr=1e-3)
    )
    assert r.module.frozen_copy is not None and r.global_step == 2
    d = fit(
        base_config(
            tmp_path / "d",
            train_world["clip"],
            train_world["train"],
            max_steps=2,
            reference="detached",
            cache_reference=False,
        )
    )
    assert d.module.reference_mode == "detached" and d.global_step == 2


def test_early_stopping_rule_counts_down_only_when_nothing_improved():
    from safegen_train.trainer import EarlyStopping

    es = EarlyStopping(patience=2)
    assert es.update(1.0, 10.0)  # first validation: both are bests
    assert not es.update(1.1, 9.0) and es.patience_left == 1  # neither improved
    assert es.update(1.2, 11.0) and es.patience_left == 2  # recall-sum improved, loss did not: reset
    assert es.update(0.9, 5.0) and es.patience_left == 2  # loss improved alone: reset
    assert not es.update(0.95, None) and not es.should_stop  # no images: loss only
    assert not es.update(0.95, 10.0) and es.should_stop
    assert EarlyStopping(patience=0).update(2.0, 1.0) and not EarlyStopping(patience=0).should_stop


def test_validation_table_and_best_checkpoint(train_world, tmp_path):
    val = make_jsonl(train_world["root"] / "val", 8, name="val.jsonl", offset=30)
    result = fit(base_config(tmp_path, train_world["clip"], train_world["train"], val_data=str(val), epochs=2))
    table = result.last_validation["recall"]
    assert set(table) == {"S-V", "S-G", "U-V", "U-G"} and set(table["S-V"]["t2i"]) == {"1", "5", "10", "20"}
    assert result.last_validation["recall_sum"] == pytest.approx(
        sum(table[g][d]["1"] for g in ("S-V", "S-G", "U-V") for d in ("t2i", "i2t"))
    )
    val_lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val_lines = [x for x in val_lines if x["split"] == "val"]
    assert [x["step"] for x in val_lines] == [2, 4] and "val/U-G/i2t/R@20" in val_lines[0]
    assert (tmp_path / "run" / "checkpoints" / "best" / "trainable.safetensors").is_file()


def test_token_terms_read_captions_as_stable_diffusion_does_with_text_tokens_padding(train_world):
    """With loss.text_tokens_padding the token states are the unmasked ones SD reads; pooled embeddings do not move."""
    from safegen_train.config import LossConfig

    states = {}
    for padding in (False, True):
        loss = LossConfig(text_tokens_safe=1.0, text_tokens_padding=padding)
        _, _, module, batch = _module_and_batch(train_world, loss=loss)
        with torch.no_grad():
            states[padding] = module.eval()(batch)
            sd_view = module.clip.text_model(input_ids=batch["safe_input_ids"]).last_hidden_state
    mask = batch["safe_attention_mask"].bool()
    assert (~mask).any()  # the batch has padding positions
    masked, unmasked = states[False]["safe_text_tokens"], states[True]["safe_text_tokens"]
    torch.testing.assert_close(unmasked, sd_view)
    torch.testing.assert_close(masked[mask], unmasked[mask])  # causal: real tokens are the same
    assert not torch.allclose(masked[~mask], unmasked[~mask])  # padding is what differs
    torch.testing.assert_close(states[False]["safe_text"], states[True]["safe_text"])
