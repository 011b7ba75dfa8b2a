"""Train the toy output classifier (network defined in ``safegen.safety.toy``).

It learns from rendered scenes, with blur, noise and colour jitter so that it also reads
the softer images the toy Stable Diffusion draws. Saved as ``config.json`` +
``model.safetensors`` (fp16) that ``safegen.safety.toy.ToyClassifier`` loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from safegen.safety.toy import DEFAULT_LABELS, SAFE_LABEL, create_toy_classifier_net
from safegen_train.toy.common import images_to_uint8, seed_everything
from safegen_train.toy.world import IMAGE_SIZE, make_quadruples

_logger = logging.getLogger(__name__)


def _dataset(n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    records = make_quadruples(n, seed)
    images = [r["safe_image"] for r in records] + [r["unsafe_image"] for r in records]
    ys: dict[str, list[int]] = {k: [] for k in DEFAULT_LABELS}
    for unsafe in (False, True):
        for r in records:
            ys["concept"].append(DEFAULT_LABELS["concept"].index(r["tag"] if unsafe else SAFE_LABEL))
            ys["shape"].append(DEFAULT_LABELS["shape"].index(r["shape"]))
            ys["colour"].append(DEFAULT_LABELS["colour"].index(r["colour"]))
            ys["background"].append(DEFAULT_LABELS["background"].index(r["background"]))
    return images_to_uint8(images), {k: torch.tensor(v) for k, v in ys.items()}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur some images, add noise and small colour shifts: generated images are softer than renders."""
    b = x.shape[0]
    blur = torch.rand(b, generator=gen) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16.0
        weight = k.expand(3, 1, 3, 3).contiguous()
        x_blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=3)
        x = torch.where(blur[:, None, None, None], x_blur, x)
    x = x + torch.randn(x.shape, generator=gen) * 0.03 * torch.rand(b, 1, 1, 1, generator=gen)
    x = x + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.08
    return x.clamp(0, 1)


@torch.no_grad()
def evaluate(net: torch.nn.Module, x_u8: torch.Tensor, ys: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy per head (percent) on uint8 images."""
    net.eval()
    correct = {k: 0 for k in ys}
    for i in range(0, len(x_u8), 512):
        logits = net(x_u8[i : i + 512].float() / 255.0)
        for k in ys:
            correct[k] += int((logits[k].argmax(-1) == ys[k][i : i + 512]).sum())
    net.train()
    return {k: 100.0 * v / len(x_u8) for k, v in correct.items()}


def train_toy_classifier(
    out_dir: str | Path,
    *,
    num_scenes: int = 6_000,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Train, evaluate on held-out renders, save; returns held-out accuracy per head."""
    seed_everything(seed)
    t0 = time.time()
    x, ys = _dataset(num_scenes, seed)
    x_val, ys_val = _dataset(max(200, num_scenes // 10), seed + 7_919)
    net = create_toy_classifier_net(DEFAULT_LABELS, IMAGE_SIZE)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * (len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = 0
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            logits = net(_augment(x[idx].float() / 255.0, gen))
            loss = sum(F.cross_entropy(logits[k], ys[k][idx]) for k in ys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                _logger.info("classifier epoch %d step %d/%d loss %.4f", epoch, step, steps, loss.item())
    metrics = evaluate(net, x_val, ys_val)
    _logger.info("toy classifier held-out accuracy: %s (%.0fs)", metrics, time.time() - t0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net.eval()
    save_file(
        {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}, str(out_dir / "model.safetensors")
    )
    config: dict[str, Any] = {
        "model_type": "safegen-toy-classifier",
        "labels": DEFAULT_LABELS,
        "image_size": IMAGE_SIZE,
        "width": 32,
        "held_out_accuracy": metrics,
        "seed": seed,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> None:
    """``python -m safegen_train.toy.classifier --out DIR``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--scenes", type=int, default=6_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_toy_classifier(args.out, num_scenes=args.scenes, epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
