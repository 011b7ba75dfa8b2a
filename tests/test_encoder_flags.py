"""--activation and --base reach the encoder loader from the CLI, and refusals name the flag to pass."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from safegen.cli.main import app

runner = CliRunner()

# A tiny open_clip text tower shaped like the tiny SD pipeline's text encoder (32 wide, 4 heads of 8).
TINY_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8, "mlp_ratio": 37 / 32},
    "text_cfg": {"context_length": 77, "vocab_size": 1514, "width": 32, "heads": 4, "layers": 2, "mlp_ratio": 37 / 32},
}


@pytest.fixture(scope="module")
def bare_checkpoint(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.model.CLIPVisionCfg(**TINY_CFG["vision_cfg"]),
        text_cfg=open_clip.model.CLIPTextCfg(**TINY_CFG["text_cfg"]),
        quick_gelu=True,
    )
    path = tmp_path_factory.mktemp("bare") / "safe.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _t2i(tiny_sd_dir, ckpt, out, *extra):
    return runner.invoke(
        app,
        [
            "t2i",
            "a red circle",
            "--model",
            str(tiny_sd_dir),
            "--safe-encoder",
            str(ckpt),
            "--steps",
            "1",
            "--size",
            "32x32",
            "--device",
            "cpu",
            "--seed",
            "0",
            "--out",
            str(out),
            "--json",
            *extra,
        ],
    )


def test_t2i_undescribed_open_clip_is_refused_naming_base(tiny_sd_dir, bare_checkpoint, tmp_path):
    r = _t2i(tiny_sd_dir, bare_checkpoint, tmp_path)
    assert r.exit_code == 1 and "--base" in r.output and "Traceback" not in r.output
    assert not list(tmp_path.rglob("*.png"))


def test_t2i_base_names_the_open_clip_model(tiny_sd_dir, bare_checkpoint, tmp_path, monkeypatch):
    import open_clip

    monkeypatch.setattr(open_clip, "get_model_config", lambda name: TINY_CFG if name == "Tiny-8" else None)
    r = _t2i(tiny_sd_dir, bare_checkpoint, tmp_path, "--base", "Tiny-8")
    assert r.exit_code == 0, r.output
    assert json.dumps(str(bare_checkpoint)) in r.stdout


def test_activation_must_be_known_and_must_not_contradict(tiny_sd_dir, tiny_clip_dir, tmp_path):
    r = _t2i(tiny_sd_dir, tiny_clip_dir, tmp_path, "--activation", "relu")
    assert r.exit_code == 2 and "quick_gelu or gelu" in r.output
    r = _t2i(tiny_sd_dir, tiny_clip_dir, tmp_path, "--activation", "gelu")  # the folder records quick_gelu
    assert r.exit_code == 1 and "contradicts" in r.output
