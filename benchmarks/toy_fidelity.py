"""Safe-prompt fidelity of each text encoder, on the full safe sets, and where its drift sits.

    python benchmarks/toy_fidelity.py [--encoder NAME=CLIP_DIR ...] [--out DIR]

For every encoder (the original toy CLIP first): the attribute fidelity of the toy SD's images
for all 135 canonical safe prompts and all 225 safe prompts in other shapes ("a photo of",
"4k", ...), beside the unsafe rate on the four generalisation axes at 6 scenes per concept
(:mod:`safegen_train.toy.generalisation`); then, with no images, the mean ``1 - cos`` between
its states for safe prompts and the original's, read as Stable Diffusion reads them (no
attention mask), on the real tokens, the end token and the padding. Resumable in ``--out``.

A Safe-CLIP to compare comes from ``safegen-train fit --config configs/toy_safeclip.yaml
--set loss.NAME=VALUE ...`` on the toy build's data, then ``safegen-train export``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOY = Path(__file__).resolve().parents[1] / "safegen" / "assets" / "toy"
QUALITY_OF = {"in_distribution": "safe", "held_out_structure": "safe_shapes"}


def image_figures(name: str, encoder: str | None, out: Path) -> dict[str, float]:
    """Unsafe rates (6 scenes per concept) and fidelity (every safe prompt), in percent."""
    from safegen.evaluation.t2i_eval import T2IEvalConfig, evaluate_t2i
    from safegen_train.toy.generalisation import PROMPT_SETS, write_generalisation_prompts

    small = write_generalisation_prompts(out / "prompts_6", 6)
    full = write_generalisation_prompts(out / "prompts_all", None)
    method = "original" if encoder is None else "safe-clip"
    row: dict[str, float] = {}
    for prompt_set in PROMPT_SETS:
        quality = QUALITY_OF.get(prompt_set)
        cfg = T2IEvalConfig(
            prompts=str(small[prompt_set]),
            out=str(out / prompt_set / name),
            base=str(TOY / "sd"),
            safe_encoder=encoder,
            methods=[method],
            classifier="toy",
            steps=20,
            guidance=5.0,
            batch_size=16,
            quality_prompts=str(full[quality]) if quality else None,
            device="cpu",
        )
        report = evaluate_t2i(cfg, log=lambda *_: None)["methods"][method]
        row[prompt_set] = 100 * report["unsafe_rate"]
        if quality:
            row[f"fidelity_{quality}"] = 100 * report["quality"]["attribute_fidelity"]
            for shape, f in report.get("attribute_fidelity_by_structure", {}).items():
                row[f"fidelity_shape:{shape}"] = 100 * f
    return row


def state_drift(encoder: str, prompts: list[str]) -> dict[str, float]:
    """Mean ``1 - cos`` to the original's states for the same prompts: real tokens, end token, padding."""
    import torch
    import torch.nn.functional as F
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(TOY / "clip")
    batch = tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt")

    def states(folder: str | Path) -> torch.Tensor:
        model = CLIPTextModel.from_pretrained(folder).eval()
        with torch.no_grad():
            return model(input_ids=batch.input_ids).last_hidden_state  # as SD reads it: no mask

    dist = 1 - F.cosine_similarity(states(encoder), states(TOY / "clip"), dim=-1)  # (N, L)
    real = batch.attention_mask.bool()
    end = real.sum(1) - 1
    return {
        "tokens": dist[real].mean().item(),
        "end": dist[torch.arange(len(prompts)), end].mean().item(),
        "padding": dist[~real].mean().item(),
    }


def main() -> None:
    from safegen_train.toy.generalisation import write_generalisation_prompts

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", action="append", default=[], help="NAME=CLIP_DIR (repeatable)")
    p.add_argument("--out", default="outputs/bench_toy_fidelity", help="resumable work folder")
    args = p.parse_args()
    out = Path(args.out)
    encoders = dict(e.split("=", 1) for e in args.encoder) or {"safe-clip": str(TOY / "safe_clip")}
    safe = write_generalisation_prompts(out / "prompts_all", None)
    prompts = {n: [json.loads(line)["prompt"] for line in safe[n].open()] for n in ("safe", "safe_shapes")}
    print(
        "| text encoder | in-distribution | held-out wording | held-out structure | wording x structure "
        "| fidelity, canonical | fidelity, other shapes | drift canonical: tokens / end / padding "
        "| drift other shapes: tokens / end / padding |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for name, encoder in {"original": None, **encoders}.items():
        r = rows[name] = image_figures(name, encoder, out)
        cells = [f"{r[k]:.1f}%" for k in ("in_distribution", "held_out", "held_out_structure", "wording_x_structure")]
        cells += [f"{r['fidelity_safe']:.1f}%", f"{r['fidelity_safe_shapes']:.1f}%"]
        for set_name in ("safe", "safe_shapes"):
            d = state_drift(encoder, prompts[set_name]) if encoder else None
            cells.append("-" if d is None else f"{d['tokens']:.4f} / {d['end']:.4f} / {d['padding']:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    # Fidelity per shape of the safe prompts in other shapes (45 each), beside the original's.
    shapes = sorted(k.split(":", 1)[1] for k in rows["original"] if k.startswith("fidelity_shape:"))
    print("\n| text encoder | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for name, r in rows.items():
        cells = []
        for shape in shapes:
            f, base = r[f"fidelity_shape:{shape}"], rows["original"][f"fidelity_shape:{shape}"]
            cells.append(f"{f:.1f}%" if name == "original" else f"{f:.1f}% ({f - base:+.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
