"""Export round trips (CLIPModel.from_pretrained and safegen.models.encoders loaders) and the
``safegen-train`` CLI (fit, --dry-run, export, eval) through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_fit_config
from typer.testing import CliRunner

from safegen_train.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short CLI fit run shared by the export/eval tests."""
    root = tmp_path_factory.mktemp("cli_world")
    files = write_fit_config(root, epochs=1)
    result = runner.invoke(app, ["fit", "--config", str(files["cfg"]), "--set", "epochs=2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {"root": root, "clip": files["clip"], "val": files["val"], "cfg": files["cfg"], "summary": summary}


def test_fit_writes_checkpoints_metrics_and_export(trained):
    run = trained["root"] / "run"
    assert trained["summary"]["global_step"] == 4
    assert (run / "checkpoints" / "step-00000004" / "state.json").is_file()
    assert json.loads((run / "config.json").read_text())["epochs"] == 2  # the override won
    export = run / "model"
    names = {p.name for p in export.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "training_config.json"} <= names
    assert {"tokenizer_config.json", "preprocessor_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    card = (export / "README.md").read_text()
    assert "| S-V | t2i |" in card and '"lora_alpha": 16' in card


def test_export_round_trip_full_model_and_towers(trained, tmp_path):
    from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    from safegen.models.encoders import load_safe_text_encoder, load_safe_vision_encoder
    from safegen_train.checkpoint import load_checkpoint
    from safegen_train.model import create_module, load_clip

    ckpt = trained["root"] / "run" / "checkpoints" / "step-00000004"
    data = load_checkpoint(ckpt)
    loaded = load_clip(str(trained["clip"]))
    module = create_module(data["config"], loaded, has_images=True)
    module.load_trainable_state_dict(data["trainable"])
    module.eval()
    ids = loaded.tokenizer(["a bloody dog attacking a cat"], padding="max_length", max_length=16, return_tensors="pt")
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want_t, _ = module.encode_text(module.clip, ids["input_ids"], ids["attention_mask"])
        want_v, _ = module.encode_image(module.clip, pixels)
        base_t, _ = (
            module.encode_reference(
                {"safe_input_ids": ids["input_ids"], "safe_attention_mask": ids["attention_mask"]}
            ).values(),
            None,
        )
    for what in ("model", "text", "vision"):
        r = runner.invoke(app, ["export", str(ckpt), str(tmp_path / what), "--what", what])
        assert r.exit_code == 0, r.output
    with torch.no_grad():
        full = CLIPModel.from_pretrained(str(tmp_path / "model")).eval()
        got_t = full.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
        got_t = getattr(got_t, "pooler_output", got_t)
        torch.testing.assert_close(got_t, want_t, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(got_t, next(iter(base_t)), atol=1e-4)  # training changed the text tower
        text = load_safe_text_encoder(str(tmp_path / "model"))
        torch.testing.assert_close(text(**ids).text_embeds, want_t, rtol=1e-4, atol=1e-5)
        vision = load_safe_vision_encoder(str(tmp_path / "model"))
        torch.testing.assert_close(vision(pixel_values=pixels).image_embeds, want_v, rtol=1e-4, atol=1e-5)
        tower_t = CLIPTextModelWithProjection.from_pretrained(str(tmp_path / "text")).eval()
        torch.testing.assert_close(tower_t(**ids).text_embeds, want_t, rtol=1e-4, atol=1e-5)
        tower_v = CLIPVisionModelWithProjection.from_pretrained(str(tmp_path / "vision")).eval()
        torch.testing.assert_close(tower_v(pixel_values=pixels).image_embeds, want_v, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            load_safe_vision_encoder(str(tmp_path / "vision"))(pixel_values=pixels).image_embeds,
            want_v,
            rtol=1e-4,
            atol=1e-5,
        )
    assert (tmp_path / "text" / "tokenizer_config.json").is_file()
    assert not (tmp_path / "text" / "preprocessor_config.json").exists()


def test_eval_prints_original_and_safe_side_by_side(trained):
    r = runner.invoke(
        app,
        [
            "eval",
            str(trained["val"]),
            "--model",
            str(trained["clip"]),
            "--safe",
            str(trained["root"] / "run" / "model"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out["tables"]) == {"original", "safe"} and out["records"] == 8
    assert set(out["tables"]["safe"]) == {"S-V", "S-G", "U-V", "U-G"}
    r = runner.invoke(app, ["eval", str(trained["val"]), "--model", str(trained["clip"])])
    assert r.exit_code == 0 and "| U-G | i2t |" in r.stdout and "original R@1" in r.stdout


def test_dry_run_prints_resolved_config_with_overrides(trained):
    r = runner.invoke(
        app, ["fit", "-c", str(trained["cfg"]), "--lr", "0.5", "--set", "loss.vision_patch_unsafe=0.3", "--dry-run"]
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.stdout)
    assert cfg["lr"] == 0.5 and cfg["loss"]["vision_patch_unsafe"] == 0.3 and cfg["batch_size"] == 4
    assert not (trained["root"] / "run" / "dry").exists()


def test_usage_and_runtime_errors_exit_codes(trained, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\nlearning_rate: 1\n")
    r = runner.invoke(app, ["fit", "-c", str(bad), "--dry-run"])
    assert r.exit_code == 2 and "bad.yaml:2: unknown field 'learning_rate'" in r.output
    r = runner.invoke(app, ["fit", "--train-data", "x.jsonl"])
    assert r.exit_code == 2 and "model is required" in r.output
    r = runner.invoke(
        app,
        [
            "fit",
            "--model",
            "nobody/no-such-clip",
            "--train-data",
            str(trained["val"]),
            "-o",
            str(tmp_path / "o"),
            "--batch-size",
            "4",
        ],
    )
    assert r.exit_code == 1 and "nobody/no-such-clip" in r.output and "Traceback" not in r.output
    missing = tmp_path / "m.jsonl"
    missing.write_text(json.dumps({"safe_text": "a", "unsafe_text": "b", "safe_image": "gone.png"}) + "\n")
    run = str(tmp_path / "run")  # not tmp_path itself: it holds the data file, which fit would refuse
    r = runner.invoke(app, ["fit", "--model", str(trained["clip"]), "--train-data", str(missing), "-o", run])
    assert r.exit_code == 1 and "m.jsonl:1" in r.output and "gone.png" in r.output
    r = runner.invoke(app, ["export", str(tmp_path), str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a checkpoint folder" in r.output
