"""What the verified swap costs next to loading the encoder it swaps in.

Every injection compares each copied tensor with the source twice: while copying (is
anything changing?) and after (does the slot now hold exactly the source, cast to its
dtype?). This times, on a real-size tower built with random weights (OpenAI ViT-L/14
text tower by default, 123 M parameters, saved as safetensors the way exports are):

- load: ``load_safe_text_encoder(folder)``, what every command does first;
- plain copy: the copy alone, without any comparison (what safegen did before);
- verified swap: ``copy_tower_weights`` (shape checks, the change check, the read-back).

    python benchmarks/injection_check.py [--arch vit-l-text|vit-h-text|tiny] [--rounds 9] [--threads 1]

The three run interleaved in rounds with the shared method of ``_bench.py``; the check's
cost is verified swap minus plain copy of the same round, and its share of loading is
taken round by round too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _bench import header, measure, summarize, table

ARCHS = {
    # OpenAI ViT-L/14 text tower (SD 1.x's text encoder)
    "vit-l-text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    # OpenCLIP ViT-H/14 text tower (SD 2.x's, 23 of its 24 layers in the pipeline)
    "vit-h-text": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "tiny": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
}


def _config(arch: str):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, projection_dim=768, **ARCHS[arch])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="vit-l-text")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (>= 5 for a published figure)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from safegen.models.encoders import copy_tower_weights, load_safe_text_encoder, tower_state_dict

    torch.manual_seed(0)
    cfg = _config(args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        CLIPTextModelWithProjection(cfg).save_pretrained(tmp)
        slot = CLIPTextModel(cfg).eval()  # the pipeline's text encoder (random: differs from the source)
        encoder = load_safe_text_encoder(Path(tmp))  # the source of the copies; also the warm-up
        source = tower_state_dict(encoder, "text")

        def load() -> float:
            t0 = time.perf_counter()
            load_safe_text_encoder(Path(tmp))
            return time.perf_counter() - t0

        def plain_copy() -> float:
            target = slot.state_dict()
            t0 = time.perf_counter()
            with torch.no_grad():
                for key, dst in target.items():
                    canon = key[len("text_model.") :] if key.startswith("text_model.") else key
                    if canon in source and not canon.endswith("position_ids"):
                        dst.copy_(source[canon].to(dtype=dst.dtype))
            elapsed = time.perf_counter() - t0
            shift_slot()
            return elapsed

        def verified_swap() -> float:
            t0 = time.perf_counter()
            copy_tower_weights(encoder, slot, "text")
            elapsed = time.perf_counter() - t0
            shift_slot()
            return elapsed

        def shift_slot() -> None:
            """Move the slot's weights away from the source, so the next swap is a real one."""
            with torch.no_grad():
                for p in slot.parameters():
                    p.add_(1.0)

        shift_slot()
        result = measure(
            {"load": load, "plain copy": plain_copy, "verified swap": verified_swap},
            baseline="load",
            rounds=args.rounds,
        )
    n_params = sum(p.numel() for p in encoder.parameters())
    values = dict(result.values)
    values["check cost"] = [v - p for v, p in zip(values["verified swap"], values["plain copy"], strict=True)]
    check = summarize(values, "load")["check cost"]
    over_copy = summarize(values, "plain copy")["verified swap"]
    print(f"{args.arch} text tower, {n_params / 1e6:.0f} M parameters")
    print(header(result))
    print(table(result, "s", ".4f", ratio_label="x load"))
    print(
        f"check cost (verified - plain, per round): median {check.median:.4f} s ({check.lo:.4f}-{check.hi:.4f}), "
        f"{check.ratio:.1%} of load ({check.ratio_lo:.1%}-{check.ratio_hi:.1%}); "
        f"verified swap x plain copy {over_copy.ratio:.2f} ({over_copy.ratio_lo:.2f}-{over_copy.ratio_hi:.2f})"
    )
    print(json.dumps({"arch": args.arch, "params": n_params, **result.to_json(), "check_cost": check.__dict__}))


if __name__ == "__main__":
    main()
