"""What the verified swap costs next to loading the encoder it swaps in.

Every injection compares each copied tensor with the source twice: while copying (is
anything changing?) and after (does the slot now hold exactly the source, cast to its
dtype?). This times, on a real-size tower built with random weights (OpenAI ViT-L/14
text tower by default, 123 M parameters, saved as safetensors the way exports are):

- load: ``load_safe_text_encoder(folder)``, what every command does first;
- plain copy: the copy alone, without any comparison (what safegen did before);
- verified swap: ``copy_tower_weights`` (shape checks, the change check, the read-back).

    python benchmarks/injection_check.py [--arch vit-l-text|vit-h-text|tiny] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from safegen.encoders import copy_tower_weights, load_safe_text_encoder, tower_state_dict

    torch.manual_seed(0)
    cfg = _config(args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        CLIPTextModelWithProjection(cfg).save_pretrained(tmp)
        slot = CLIPTextModel(cfg).eval()  # the pipeline's text encoder (random: differs from the source)
        loads, plain, verified = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            encoder = load_safe_text_encoder(Path(tmp))
            loads.append(time.perf_counter() - t0)

            source, target = tower_state_dict(encoder, "text"), slot.state_dict()
            t0 = time.perf_counter()
            with torch.no_grad():
                for key, dst in target.items():
                    canon = key[len("text_model.") :] if key.startswith("text_model.") else key
                    if canon in source and not canon.endswith("position_ids"):
                        dst.copy_(source[canon].to(dtype=dst.dtype))
            plain.append(time.perf_counter() - t0)

            with torch.no_grad():  # put the slot back to different weights, so the swap is a real one
                for p in slot.parameters():
                    p.add_(1.0)
            t0 = time.perf_counter()
            copy_tower_weights(encoder, slot, "text")
            verified.append(time.perf_counter() - t0)
            with torch.no_grad():
                for p in slot.parameters():
                    p.add_(1.0)
    n_params = sum(p.numel() for p in encoder.parameters())
    load_s, plain_s, verified_s = (statistics.median(x) for x in (loads, plain, verified))
    check_s = verified_s - plain_s
    print("| tower | params | load s | plain copy s | verified swap s | check cost s | check / load |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.arch} | {n_params / 1e6:.0f} M | {load_s:.3f} | {plain_s:.3f} | {verified_s:.3f} | "
        f"{check_s:.3f} | {check_s / load_s:.1%} |"
    )


if __name__ == "__main__":
    main()
