"""Load a Safe-CLIP encoder from each kind of source safegen reads, and see what each check refuses.

    python examples/encoder_sources.py

Every source kind below is built in a temporary folder from tiny models (so this runs
offline in seconds); with real weights the calls and CLI flags are the same:

    transformers folder / hub id   safegen t2i "..." --safe-encoder aimagelab/safeclip_vit-l_14
    an export (one tower)          safegen t2i "..." --safe-encoder out/safe-clip-text
    open_clip hub folder           safegen t2i "..." --safe-encoder path/with/open_clip_config.json
    bare open_clip checkpoint      safegen t2i "..." --safe-encoder vit-h.safetensors --base ViT-H-14
    LoRA adapter                   safegen t2i "..." --safe-encoder adapter/ [--base openai/clip-vit-large-patch14]
    loaded module                  safegen.inject_text_encoder(pipe, module)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from safegen.core.errors import SafegenError
from safegen.models.encoders import inject_text_encoder, load_safe_text_encoder
from safegen.testing import tiny_clip_model, tiny_sd_pipeline


def _open_clip_model():
    import open_clip

    torch.manual_seed(0)
    cfg = {
        "embed_dim": 32,
        "quick_gelu": False,  # a LAION-style model: GELU, which shapes alone cannot reveal
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 160, "head_width": 80, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 1514, "width": 32, "heads": 4, "layers": 2},
    }
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.model.CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=open_clip.model.CLIPTextCfg(**cfg["text_cfg"]),
    )
    return model, cfg


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="safegen-sources-") as tmp:
        run(Path(tmp))


def run(root: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    from safegen_train.export import export_clip

    sources: dict[str, object] = {}

    # 1. a transformers CLIPModel folder (what a hub id downloads to)
    tiny_clip_model(seed=5).save_pretrained(root / "clip_model")
    sources["transformers folder"] = root / "clip_model"

    # 2. a `safegen-train export --what text` folder (one tower)
    export_clip(tiny_clip_model(seed=6), root / "export_text", what="text")
    sources["export --what text"] = root / "export_text"

    # 3. an open_clip hub-style folder: the config beside the weights says head width and activation
    oc, cfg = _open_clip_model()
    (root / "open_clip").mkdir()
    save_file({k: v.contiguous() for k, v in oc.state_dict().items()}, str(root / "open_clip" / "model.safetensors"))
    (root / "open_clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    sources["open_clip folder"] = root / "open_clip"

    # 4. the same checkpoint alone: refused (its shapes are not OpenAI's), then described explicitly
    bare = root / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in oc.state_dict().items()}, str(bare))
    try:
        load_safe_text_encoder(bare)
    except SafegenError as exc:
        print(f"bare open_clip checkpoint, undescribed -> refused: {exc}")
    sources["bare open_clip + head_width/activation"] = (bare, {"head_width": 80, "activation": "gelu"})

    # 5. a peft LoRA adapter trained on a CLIPTextModel, merged exactly into its base
    from transformers import CLIPTextModel

    tiny_clip_model(seed=3).save_pretrained(root / "lora_base")
    peft_model = get_peft_model(
        CLIPTextModel.from_pretrained(root / "lora_base"), LoraConfig(r=4, target_modules=["k_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    peft_model.peft_config["default"].base_model_name_or_path = str(root / "lora_base")
    peft_model.save_pretrained(root / "lora")
    sources["LoRA adapter"] = root / "lora"

    # 6. a module already in memory
    sources["loaded module"] = tiny_clip_model(seed=7)

    for kind, source in sources.items():
        source, kwargs = source if isinstance(source, tuple) else (source, {})
        encoder = load_safe_text_encoder(source, **kwargs)
        cfg_ = encoder.config
        print(f"{kind:40s} -> {type(encoder).__name__}, width {cfg_.hidden_size}, {cfg_.hidden_act}")

    # Injection verifies the copy and refuses a swap that would change nothing.
    pipe = tiny_sd_pipeline()
    inject_text_encoder(pipe, root / "clip_model")
    try:
        inject_text_encoder(pipe, root / "clip_model")
    except SafegenError as exc:
        print(f"second identical swap -> refused: {exc}")


if __name__ == "__main__":
    main()
