"""Every `safegen-train export` kind is accepted by every command that takes or evaluates a safe encoder,
or refused in one line that names the export needed."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_clip_folder, make_jsonl
from typer.testing import CliRunner

from safegen.cli.main import app as safegen_app
from safegen_train.cli import app as train_app

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from transformers import CLIPImageProcessor, CLIPModel

    from safegen.testing import tiny_tokenizer
    from safegen_train.export import export_clip

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("exports")
    original = make_clip_folder(root / "clip", seed=0)
    safe = CLIPModel.from_pretrained(str(make_clip_folder(root / "safe_src", seed=1)))
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    exports = {}
    for what in ("model", "text", "vision"):
        exports[what] = export_clip(safe, root / what, what=what, tokenizer=tiny_tokenizer(), image_processor=proc)
    data = make_jsonl(root / "data", 4)
    return {"clip": original, "safe": safe, "exports": exports, "data": data, "root": root}


@pytest.mark.parametrize("what", ["model", "text", "vision"])
def test_train_eval_accepts_every_export(world, what):
    r = runner.invoke(
        train_app,
        ["eval", str(world["data"]), "--model", str(world["clip"]), "--safe", str(world["exports"][what]), "--json"],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out["tables"]) == {"original", "safe"}


@pytest.mark.parametrize("what", ["model", "text", "vision"])
def test_eval_retrieval_accepts_every_export(world, what, tmp_path):
    r = runner.invoke(
        safegen_app,
        [
            "eval",
            "retrieval",
            str(world["data"]),
            "--clip",
            str(world["clip"]),
            "--safe",
            str(world["exports"][what]),
            "--out",
            str(tmp_path),
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["safe"] == str(world["exports"][what])


def test_one_tower_export_completes_the_original_exactly(world):
    from safegen.models.encoders import load_safe_clip_model, tower_state_dict
    from safegen.testing import tiny_clip_model

    model = load_safe_clip_model(str(world["exports"]["text"]), original=str(world["clip"]))
    safe_text, orig_vision = tower_state_dict(world["safe"], "text"), tower_state_dict(tiny_clip_model(0), "vision")
    for key, value in tower_state_dict(model, "text").items():
        assert torch.equal(value, safe_text[key]), key
    for key, value in tower_state_dict(model, "vision").items():
        assert torch.equal(value, orig_vision[key]), key


def test_retrieve_refuses_a_one_tower_export_in_one_line(world, tmp_path):
    r = runner.invoke(
        safegen_app,
        [
            "retrieve",
            "build",
            str(tmp_path / "idx"),
            "--texts",
            str(world["data"]),
            "--model",
            str(world["exports"]["text"]),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--what model" in lines[0] and "Traceback" not in r.output


def test_wrong_tower_export_is_refused_naming_the_export(world):
    from safegen.core.errors import SafegenError
    from safegen.models.encoders import load_safe_text_encoder, load_safe_vision_encoder

    with pytest.raises(SafegenError, match="--what text"):
        load_safe_text_encoder(str(world["exports"]["vision"]))
    with pytest.raises(SafegenError, match="--what vision"):
        load_safe_vision_encoder(str(world["exports"]["text"]))
    assert load_safe_text_encoder(str(world["exports"]["model"])).config.hidden_size == 32


def test_t2i_with_vision_export_is_one_line(world, tiny_sd_dir, tmp_path):
    r = runner.invoke(
        safegen_app,
        [
            "t2i",
            "a cat",
            "--model",
            str(tiny_sd_dir),
            "--safe-encoder",
            str(world["exports"]["vision"]),
            "--steps",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 1
    assert "--what text" in r.output and "Traceback" not in r.output
    assert not list(tmp_path.glob("*.png"))
