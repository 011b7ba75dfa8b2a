"""The Safe-CLIP loss: eight terms on projected embeddings, plus optional hidden-state terms.

The eight terms and their released weights are those of the method table
(``shared/reference/safe-clip-method.md``):

====  ==========================  ==============  =====================  ========
 #    name                        group           pair                   weight
====  ==========================  ==============  =====================  ========
 1    text_safe                   preservation    T(t)  -> T0(t)         0.10
 2    text_unsafe                 redirection     T(t*) -> T0(t)         0.10
 3    vision_safe                 preservation    V(v)  -> V0(v)         0.10
 4    vision_unsafe               redirection     V(v*) -> V0(v)         0.20
 5    safe_text_vs_ref_image      preservation    T(t)  vs V0(v)         0.25
 6    unsafe_text_vs_ref_image    redirection     T(t*) vs V0(v)         0.25
 7    ref_text_vs_safe_image      preservation    T0(t) vs V(v)          0.25
 8    ref_text_vs_unsafe_image    redirection     T0(t) vs V(v*)         0.50
====  ==========================  ==============  =====================  ========

Terms 1-4 are ``mean(1 - cos)``; terms 5-8 are symmetric in-batch InfoNCE with a fixed
logit scale (100). The released combination divides the weights by their sum and the
weighted sum by the number of terms. When inputs are missing (``None``: a text-only batch,
or a tower that is not trained) their terms drop out and the same rule is applied to the
terms that remain: ``total = sum(w_i * L_i) / sum(w_i) / n`` over the present terms, which
equals the released value when all eight are present.

Hidden-state terms (beyond the paper, off by default; see :class:`SafeCLIPLoss`) are added
to that total with their own weights, unnormalised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from safegen_train.config import LossConfig

_logger = logging.getLogger(__name__)

# term name -> (first input, second input, form)
TERMS: dict[str, tuple[str, str, str]] = {
    "text_safe": ("safe_text", "ref_text", "cosine"),
    "text_unsafe": ("unsafe_text", "ref_text", "cosine"),
    "vision_safe": ("safe_image", "ref_image", "cosine"),
    "vision_unsafe": ("unsafe_image", "ref_image", "cosine"),
    "safe_text_vs_ref_image": ("safe_text", "ref_image", "contrastive"),
    "unsafe_text_vs_ref_image": ("unsafe_text", "ref_image", "contrastive"),
    "ref_text_vs_safe_image": ("ref_text", "safe_image", "contrastive"),
    "ref_text_vs_unsafe_image": ("ref_text", "unsafe_image", "contrastive"),
}
HIDDEN_TERMS = (
    "vision_patch_safe",
    "vision_patch_unsafe",
    "text_tokens_safe",
    "text_tokens_unsafe",
    "text_tokens_follow",
)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``1 - cos(x_i, y_i)`` over the last dimension (any leading shape)."""
    return (1.0 - F.cosine_similarity(x.float(), y.float(), dim=-1)).mean()


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Symmetric InfoNCE between row-paired, already normalised ``a`` and ``b`` (both (N, D))."""
    logits = logit_scale * a @ b.T  # (N, N)
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def _gather_with_local_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``x`` (B, D) across processes; only this process's slice keeps its gradient.

    Returns the (world * B, D) tensor and the world size. Every process must pass the same B.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0), world


def token_chamfer_distance(
    x: torch.Tensor, x_mask: torch.Tensor | None, y: torch.Tensor, y_mask: torch.Tensor | None
) -> torch.Tensor:
    """Symmetric Chamfer cosine distance between two token sets per sample.

    ``x`` (B, Lx, H) and ``y`` (B, Ly, H); masks (B, L) mark the real tokens. Every token of
    ``x`` is matched to its most similar token of ``y`` and vice versa; the two mean
    distances are averaged. Order- and length-free, and the two directions stop all tokens of
    one side collapsing onto a single token of the other.
    """
    xn, yn = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    sims = xn @ yn.transpose(1, 2)  # (B, Lx, Ly)
    xm = torch.ones(x.shape[:2], device=x.device) if x_mask is None else x_mask.float()  # (B, Lx)
    ym = torch.ones(y.shape[:2], device=y.device) if y_mask is None else y_mask.float()  # (B, Ly)
    neg = torch.finfo(sims.dtype).min
    best_for_x = sims.masked_fill(ym[:, None, :] == 0, neg).amax(dim=2)  # (B, Lx)
    best_for_y = sims.masked_fill(xm[:, :, None] == 0, neg).amax(dim=1)  # (B, Ly)
    d_x = ((1 - best_for_x) * xm).sum(1) / xm.sum(1).clamp_min(1)  # (B,)
    d_y = ((1 - best_for_y) * ym).sum(1) / ym.sum(1).clamp_min(1)  # (B,)
    return (0.5 * (d_x + d_y)).mean()


def suffix_alignment(
    unsafe_ids: torch.Tensor, unsafe_mask: torch.Tensor, safe_ids: torch.Tensor, safe_mask: torch.Tensor
) -> torch.Tensor:
    """For each unsafe-caption position, the safe-caption position it repeats from the end, or -1.

    ``*_ids`` and ``*_mask`` are (B, L) padded token ids and attention masks. The tail the two
    captions share (token ids equal when both are read right-aligned, end token included) is
    matched position by position, and every padding position after it is matched to the one
    that lies as far past the safe caption's end (Stable Diffusion reads padding states too).
    Returns (B, L) long indices into the safe caption's positions.

    Why: CLIP's text transformer is causal, so a token that follows an unsafe phrase carries it
    forward; these are the positions that should read exactly as they do in the safe caption.
    """
    batch, length = unsafe_ids.shape
    index = torch.full((batch, length), -1, dtype=torch.long, device=unsafe_ids.device)
    n_unsafe = unsafe_mask.sum(dim=1).tolist()
    n_safe = safe_mask.sum(dim=1).tolist()
    for b in range(batch):
        nu, ns = int(n_unsafe[b]), int(n_safe[b])
        shared = 0
        # Right-aligned common tail; stops before the start token (position 0 always matches).
        while shared < min(nu, ns) - 1 and int(unsafe_ids[b, nu - 1 - shared]) == int(safe_ids[b, ns - 1 - shared]):
            shared += 1
        if shared == 0 or nu == ns and shared >= nu - 1:
            continue  # nothing shared at the end, or the two captions are the same text
        offset = nu - ns
        for j in range(nu - shared, length):
            if 0 <= j - offset < length:
                index[b, j] = j - offset
    return index


def aligned_token_distance(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(x[b, j], y[b, index[b, j]])`` over positions with ``index >= 0``.

    ``x`` (B, L, H), ``y`` (B, L', H), ``index`` (B, L) from :func:`suffix_alignment`.
    """
    valid = index >= 0  # (B, L)
    if not bool(valid.any()):
        return x.new_zeros((), dtype=torch.float32)
    gathered = torch.gather(y.float(), 1, index.clamp_min(0)[..., None].expand(-1, -1, y.shape[-1]))  # (B, L, H)
    per_token = 1.0 - F.cosine_similarity(x.float(), gathered, dim=-1)  # (B, L)
    return (per_token * valid).sum() / valid.sum()


class SafeCLIPLoss(nn.Module):
    """The Safe-CLIP training objective, returning every named part.

    Call with keyword tensors of shape (B, D), not yet normalised::

        out = loss_fn(safe_text=T(t), unsafe_text=T(t*), safe_image=V(v), unsafe_image=V(v*),
                      ref_text=T0(t), ref_image=V0(v))
        out["loss"].backward(); out["text_unsafe"]  # ... one entry per present term

    Any input may be ``None``; the terms that need it are left out of the dict and of the
    total (module docstring). Defaults are the released weights, combination and fixed
    logit scale 100.

    Hidden-state terms, weights 0 (off) by default, each computed only when its weight is
    non-zero and its inputs are given:

    - ``vision_patch_unsafe``: the unsafe image's patch tokens at an inner vision layer
      (LLaVA reads the second-to-last) pulled toward the *reference* tokens of its safe
      twin at the same layer, position by position (``1 - cos``). The twins are generated
      from paired captions and spatially aligned, so position i of one corresponds to
      position i of the other. Inputs ``unsafe_image_tokens``, ``ref_image_tokens`` (B, N, H).
    - ``vision_patch_safe``: the safe image's tokens kept at their reference
      (``safe_image_tokens`` vs ``ref_image_tokens``), so a captioner's view of safe images
      does not drift.
    - ``text_tokens_safe``: per-position ``1 - cos`` between the safe caption's token states
      and the reference ones (``safe_text_tokens`` vs ``ref_text_tokens``, (B, L, H), mask
      ``safe_text_mask``). The input is identical on both sides, so positions align exactly:
      this is what keeps Stable Diffusion's view of safe prompts unchanged. Padding positions
      count only with ``text_tokens_padding`` (Stable Diffusion reads them, and the causal
      encoder writes the prompt into them; the model then encodes the token states unmasked).
    - ``text_tokens_unsafe``: the unsafe caption's token states pulled toward the safe
      reference token set by a symmetric Chamfer cosine distance (``unsafe_text_tokens`` /
      ``unsafe_text_mask`` vs ``ref_text_tokens`` / ``safe_text_mask``). Unlike the image
      twins, t and t* are *not* aligned: they differ in length and wording, so a
      per-position term would pair unrelated words. Chamfer matching lets shared words
      match themselves and pulls each unsafe word to the nearest safe state, while the
      reverse direction makes every safe token be covered (no collapse onto one token).
    - ``text_tokens_follow``: where t* does end like t (the text after the unsafe phrase, the
      end token and the padding), those positions *are* aligned: each is pulled to the
      reference state of the safe position it repeats, per position (``follow_index`` from
      :func:`suffix_alignment`). A causal text encoder carries an unsafe phrase into every
      later token, and Stable Diffusion reads them all; the pooled terms see only the end token.

    With ``gather_negatives`` (and torch.distributed initialised) the contrastive terms
    use the whole cross-process batch as negatives; this process's slice keeps its
    gradient and the gradient is scaled by the world size so that DDP's averaging gives
    exactly the gradient of a single process holding the global batch (the reported
    value is unscaled).
    """

    def __init__(self, config: LossConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = LossConfig(**overrides)
        elif isinstance(config, Mapping):
            config = LossConfig(**{**dict(config), **overrides})
        elif overrides:
            config = LossConfig(**{**config.to_dict(), **overrides})
        self.config = config

    @property
    def weights(self) -> dict[str, float]:
        return {name: float(getattr(self.config, name)) for name in TERMS}

    def _contrastive(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if (
            self.config.gather_negatives
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            a_all, world = _gather_with_local_grad(a)
            b_all, _ = _gather_with_local_grad(b)
            full = contrastive_loss(a_all, b_all, self.config.logit_scale)
            # value: the global-batch loss; gradient: world * d(loss)/d(local slice) (see class doc)
            return full * world - full.detach() * (world - 1)
        return contrastive_loss(a, b, self.config.logit_scale)

    def forward(
        self,
        *,
        safe_text: torch.Tensor | None = None,
        unsafe_text: torch.Tensor | None = None,
        safe_image: torch.Tensor | None = None,
        unsafe_image: torch.Tensor | None = None,
        ref_text: torch.Tensor | None = None,
        ref_image: torch.Tensor | None = None,
        safe_image_tokens: torch.Tensor | None = None,
        unsafe_image_tokens: torch.Tensor | None = None,
        ref_image_tokens: torch.Tensor | None = None,
        safe_text_tokens: torch.Tensor | None = None,
        unsafe_text_tokens: torch.Tensor | None = None,
        ref_text_tokens: torch.Tensor | None = None,
        safe_text_mask: torch.Tensor | None = None,
        unsafe_text_mask: torch.Tensor | None = None,
        follow_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss": total, <term>: value, ...}`` for the terms the inputs allow."""
        feats = {
            "safe_text": safe_text,
            "unsafe_text": unsafe_text,
            "safe_image": safe_image,
            "unsafe_image": unsafe_image,
            "ref_text": ref_text,
            "ref_image": ref_image,
        }
        for key, value in feats.items():
            if value is not None and value.ndim != 2:
                raise ValueError(f"SafeCLIPLoss: '{key}' must be (B, D), got shape {tuple(value.shape)}")
        normed = {k: F.normalize(v.float(), dim=-1) for k, v in feats.items() if v is not None}  # each (B, D)

        out: dict[str, torch.Tensor] = {}
        for name, (first, second, form) in TERMS.items():
            if first not in normed or second not in normed:
                continue
            a, b = normed[first], normed[second]
            out[name] = cosine_distance(a, b) if form == "cosine" else self._contrastive(a, b)
        if not out and not any(x is not None for x in (safe_image_tokens, unsafe_image_tokens, safe_text_tokens)):
            raise ValueError("SafeCLIPLoss: no term can be computed from the inputs given (all pairs have a None)")

        weights = self.weights
        total = _zero_like_any(feats, safe_image_tokens, unsafe_image_tokens, safe_text_tokens, unsafe_text_tokens)
        if out:
            weighted = sum(weights[name] * value for name, value in out.items())
            if self.config.combination == "released":
                weight_sum = sum(weights[name] for name in out)
                total = weighted / (weight_sum if weight_sum > 0 else 1.0) / len(out)
            else:  # "sum"
                total = weighted

        cfg = self.config
        hidden: dict[str, torch.Tensor] = {}
        if cfg.vision_patch_unsafe and unsafe_image_tokens is not None and ref_image_tokens is not None:
            hidden["vision_patch_unsafe"] = cosine_distance(unsafe_image_tokens, ref_image_tokens)  # over (B, N)
        if cfg.vision_patch_safe and safe_image_tokens is not None and ref_image_tokens is not None:
            hidden["vision_patch_safe"] = cosine_distance(safe_image_tokens, ref_image_tokens)
        if cfg.text_tokens_safe and safe_text_tokens is not None and ref_text_tokens is not None:
            per_token = 1.0 - F.cosine_similarity(safe_text_tokens.float(), ref_text_tokens.float(), dim=-1)  # (B, L)
            if safe_text_mask is None or cfg.text_tokens_padding:
                hidden["text_tokens_safe"] = per_token.mean()
            else:
                m = safe_text_mask.float()
                hidden["text_tokens_safe"] = (per_token * m).sum() / m.sum().clamp_min(1)
        if cfg.text_tokens_unsafe and unsafe_text_tokens is not None and ref_text_tokens is not None:
            hidden["text_tokens_unsafe"] = token_chamfer_distance(
                unsafe_text_tokens, unsafe_text_mask, ref_text_tokens, safe_text_mask
            )
        if cfg.text_tokens_follow and unsafe_text_tokens is not None and follow_index is not None:
            hidden["text_tokens_follow"] = aligned_token_distance(unsafe_text_tokens, ref_text_tokens, follow_index)
        for name, value in hidden.items():
            total = total + float(getattr(cfg, name)) * value
        out.update(hidden)
        out["loss"] = total
        return out


def _zero_like_any(feats: dict[str, torch.Tensor | None], *more: torch.Tensor | None) -> torch.Tensor:
    for value in list(feats.values()) + list(more):
        if value is not None:
            return value.new_zeros((), dtype=torch.float32)
    return torch.zeros(())
