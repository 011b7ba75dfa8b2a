"""SafeCLIPLoss: every term against a hand computation, the released combination, None inputs,
and the optional hidden-state terms."""

from __future__ import annotations

import math

import pytest
import torch

from safegen_train.config import LossConfig
from safegen_train.losses import TERMS, SafeCLIPLoss, token_chamfer_distance

RELEASED = {
    "text_safe": 0.10,
    "text_unsafe": 0.10,
    "vision_safe": 0.10,
    "vision_unsafe": 0.20,
    "safe_text_vs_ref_image": 0.25,
    "unsafe_text_vs_ref_image": 0.25,
    "ref_text_vs_safe_image": 0.25,
    "ref_text_vs_unsafe_image": 0.50,
}


def _inputs(seed: int = 0, b: int = 3, d: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = ["safe_text", "unsafe_text", "safe_image", "unsafe_image", "ref_text", "ref_image"]
    return {n: torch.randn(b, d, generator=g) * 3 for n in names}  # deliberately not normalised


def _hand_cos_term(x: torch.Tensor, y: torch.Tensor) -> float:
    vals = []
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        dot = sum(a * b for a, b in zip(xi, yi, strict=True))
        nx, ny = math.sqrt(sum(a * a for a in xi)), math.sqrt(sum(b * b for b in yi))
        vals.append(1 - dot / (nx * ny))
    return sum(vals) / len(vals)


def _hand_infonce(x: torch.Tensor, y: torch.Tensor, scale: float = 100.0) -> float:
    xs = [[v / math.sqrt(sum(a * a for a in row)) for v in row] for row in x.tolist()]
    ys = [[v / math.sqrt(sum(a * a for a in row)) for v in row] for row in y.tolist()]
    n = len(xs)
    logits = [[scale * sum(a * b for a, b in zip(xs[i], ys[j], strict=True)) for j in range(n)] for i in range(n)]

    def ce(rows):
        total = 0.0
        for i, row in enumerate(rows):
            m = max(row)
            total += -(row[i] - m - math.log(sum(math.exp(v - m) for v in row)))
        return total / n

    cols = [[logits[i][j] for i in range(n)] for j in range(n)]
    return 0.5 * (ce(logits) + ce(cols))


def test_each_term_matches_hand_computation():
    x = _inputs()
    out = SafeCLIPLoss()(**x)
    for name, (a, b, form) in TERMS.items():
        expected = _hand_cos_term(x[a], x[b]) if form == "cosine" else _hand_infonce(x[a], x[b])
        assert out[name].item() == pytest.approx(expected, rel=1e-4, abs=1e-5), name


def test_released_combination_and_weights():
    x = _inputs(1)
    out = SafeCLIPLoss()(**x)
    assert set(out) == set(RELEASED) | {"loss"}
    expected = sum(RELEASED[k] * out[k].item() for k in RELEASED) / 1.75 / 8
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    summed = SafeCLIPLoss(combination="sum")(**x)
    assert summed["loss"].item() == pytest.approx(sum(RELEASED[k] * out[k].item() for k in RELEASED), rel=1e-6)


def test_configurable_weights_and_logit_scale():
    x = _inputs(2)
    out = SafeCLIPLoss(logit_scale=10.0, text_unsafe=0.0)(**x)
    assert out["safe_text_vs_ref_image"].item() == pytest.approx(
        _hand_infonce(x["safe_text"], x["ref_image"], 10.0), rel=1e-4
    )
    w = dict(RELEASED, text_unsafe=0.0)
    expected = sum(w[k] * out[k].item() for k in w) / sum(w.values()) / 8
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_text_only_batch_drops_image_terms_with_defined_total():
    x = _inputs(3)
    out = SafeCLIPLoss()(safe_text=x["safe_text"], unsafe_text=x["unsafe_text"], ref_text=x["ref_text"])
    assert set(out) == {"text_safe", "text_unsafe", "loss"}
    expected = (0.1 * out["text_safe"].item() + 0.1 * out["text_unsafe"].item()) / 0.2 / 2
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    # with reference image embeddings, terms 5 and 6 come back
    out = SafeCLIPLoss()(
        safe_text=x["safe_text"], unsafe_text=x["unsafe_text"], ref_text=x["ref_text"], ref_image=x["ref_image"]
    )
    assert set(out) == {"text_safe", "text_unsafe", "safe_text_vs_ref_image", "unsafe_text_vs_ref_image", "loss"}
    assert torch.isfinite(out["loss"])


def test_identical_embeddings_give_zero_cosine_terms_and_gradients_flow():
    x = _inputs(4)
    st = x["ref_text"].clone().requires_grad_(True)
    out = SafeCLIPLoss()(safe_text=st, unsafe_text=x["unsafe_text"], ref_text=x["ref_text"])
    assert out["text_safe"].item() == pytest.approx(0.0, abs=1e-6)
    out["loss"].backward()
    assert st.grad is not None and torch.isfinite(st.grad).all()


def test_bad_shapes_and_no_terms_are_refused():
    with pytest.raises(ValueError, match="safe_text"):
        SafeCLIPLoss()(safe_text=torch.zeros(2, 3, 4), ref_text=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no term"):
        SafeCLIPLoss()(safe_text=torch.zeros(2, 4))


def test_hidden_terms_off_by_default_and_reported_when_on():
    x = _inputs(5)
    g = torch.Generator().manual_seed(0)
    tokens = {
        "unsafe_image_tokens": torch.randn(3, 5, 6, generator=g),
        "safe_image_tokens": torch.randn(3, 5, 6, generator=g),
        "ref_image_tokens": torch.randn(3, 5, 6, generator=g),
        "safe_text_tokens": torch.randn(3, 7, 6, generator=g),
        "unsafe_text_tokens": torch.randn(3, 9, 6, generator=g),
        "ref_text_tokens": torch.randn(3, 7, 6, generator=g),
    }
    off = SafeCLIPLoss()(**x, **tokens)
    assert not {"vision_patch_unsafe", "text_tokens_safe"} & set(off)
    cfg = LossConfig(vision_patch_unsafe=0.5, vision_patch_safe=0.25, text_tokens_safe=0.1, text_tokens_unsafe=0.2)
    on = SafeCLIPLoss(cfg)(**x, **tokens)
    hand = _hand_cos_term(tokens["unsafe_image_tokens"].reshape(-1, 6), tokens["ref_image_tokens"].reshape(-1, 6))
    assert on["vision_patch_unsafe"].item() == pytest.approx(hand, rel=1e-5)
    hand_safe = _hand_cos_term(tokens["safe_text_tokens"].reshape(-1, 6), tokens["ref_text_tokens"].reshape(-1, 6))
    assert on["text_tokens_safe"].item() == pytest.approx(hand_safe, rel=1e-5)
    extra = sum(
        w * on[k].item()
        for k, w in [
            ("vision_patch_unsafe", 0.5),
            ("vision_patch_safe", 0.25),
            ("text_tokens_safe", 0.1),
            ("text_tokens_unsafe", 0.2),
        ]
    )
    assert on["loss"].item() == pytest.approx(off["loss"].item() + extra, rel=1e-5)


def test_chamfer_is_order_free_masked_and_zero_on_same_set():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 4, 8, generator=g)
    perm = y[:, torch.tensor([2, 0, 3, 1])]
    assert token_chamfer_distance(perm, None, y, None).item() == pytest.approx(0.0, abs=1e-6)
    # padding positions (mask 0) are ignored, whatever they hold
    padded = torch.cat([perm, torch.randn(2, 3, 8, generator=g)], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]] * 2)
    assert token_chamfer_distance(padded, mask, y, None).item() == pytest.approx(0.0, abs=1e-6)
    # collapsing every token onto one reference token is penalised by the reverse direction
    collapsed = y[:, :1].expand(-1, 4, -1)
    assert token_chamfer_distance(collapsed, None, y, None).item() > 0.1


def test_safe_token_term_holds_padding_only_when_asked():
    """Stable Diffusion reads padding states too: text_tokens_padding counts their drift."""
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(2, 6, 8, generator=g)
    drifted = ref.clone()
    drifted[:, 4:] = torch.randn(2, 2, 8, generator=g)  # only the padding positions move
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]] * 2)
    args = dict(safe_text_tokens=drifted, ref_text_tokens=ref, safe_text_mask=mask)
    masked = SafeCLIPLoss(LossConfig(text_tokens_safe=1.0))(**args)["text_tokens_safe"]
    assert masked.item() == pytest.approx(0.0, abs=1e-6)
    held = SafeCLIPLoss(LossConfig(text_tokens_safe=1.0, text_tokens_padding=True))(**args)["text_tokens_safe"]
    hand = _hand_cos_term(drifted.reshape(-1, 8), ref.reshape(-1, 8))
    assert held.item() == pytest.approx(hand, rel=1e-5) and held.item() > 0.1
