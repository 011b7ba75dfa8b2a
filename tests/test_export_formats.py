"""Export: the release's two best checkpoints, the card of the exported checkpoint, and the open_clip format."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_fit_config
from typer.testing import CliRunner

from safegen_train.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export_formats")
    cfg = write_fit_config(root, epochs=3, extra="export_best: recall\n")["cfg"]
    result = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    return root


def test_both_bests_are_kept_and_the_card_reports_the_exported_one(run, tmp_path):
    ckpts = run / "run" / "checkpoints"
    assert (ckpts / "best-loss" / "state.json").is_file() and (ckpts / "best-recall" / "state.json").is_file()
    state = json.loads((run / "run" / "state.json").read_text())
    assert state["best_loss_checkpoint"].endswith("best-loss")
    for name in ("best-loss", "best-recall"):
        saved = json.loads((ckpts / name / "state.json").read_text())
        r = runner.invoke(app, ["export", str(ckpts / name), str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        card = (tmp_path / name / "README.md").read_text()
        assert f"Weights from step {saved['global_step']}" in card
        assert f"{saved['last_validation']['recall_sum']:.1f}" in card
    # fit exported best-recall (export_best: recall), with that checkpoint's validation in its card
    recall_state = json.loads((ckpts / "best-recall" / "state.json").read_text())
    card = (run / "run" / "model" / "README.md").read_text()
    assert f"Weights from step {recall_state['global_step']}" in card and "best-recall" in card


def test_open_clip_format_round_trips_through_open_clip(run, tmp_path):
    import open_clip
    from transformers import CLIPModel

    ckpt = run / "run" / "checkpoints" / "best"
    r = runner.invoke(app, ["export", str(ckpt), str(tmp_path / "oc"), "--format", "open_clip"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["format"] == "open_clip"
    r = runner.invoke(app, ["export", str(ckpt), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    oc = open_clip.create_model(f"local-dir:{tmp_path / 'oc'}").eval()
    hf = CLIPModel.from_pretrained(str(tmp_path / "hf")).eval()
    ids = torch.tensor([[1512, 320, 1000, 44, 1513] + [0] * 72])
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want_t = hf.get_text_features(input_ids=ids)
        want_i = hf.get_image_features(pixel_values=pixels)
        want_t = getattr(want_t, "pooler_output", want_t)
        want_i = getattr(want_i, "pooler_output", want_i)
        torch.testing.assert_close(oc.encode_text(ids), want_t, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(oc.encode_image(pixels), want_i, atol=1e-5, rtol=1e-5)
    # and safegen reads the open_clip folder back, described by its own config
    from safegen.models.encoders import load_safe_text_encoder

    with torch.no_grad():
        got = load_safe_text_encoder(tmp_path / "oc")(input_ids=ids).text_embeds
    torch.testing.assert_close(got, want_t, atol=1e-5, rtol=1e-5)


def test_open_clip_format_needs_both_towers(run, tmp_path):
    ckpt = run / "run" / "checkpoints" / "best"
    r = runner.invoke(app, ["export", str(ckpt), str(tmp_path / "x"), "--format", "open_clip", "--what", "text"])
    assert r.exit_code == 2 and "--what model" in r.output
    assert not (tmp_path / "x").exists()
