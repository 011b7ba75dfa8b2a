"""What an operator configures for `safegen serve`: models, batching, limits, policy, keys.

Everything a request may change is bounded here; everything else (which model, which
safe encoder, which classifier, which files) is the operator's choice alone.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from safegen.core.checks import check_attention
from safegen.core.devices import check_device
from safegen.core.errors import UsageError
from safegen.models.presets import get_preset

#: What the service does with an image its classifier flags ("block" withholds it).
SERVE_ON_UNSAFE = ("blur", "block", "black", "keep")
#: --on-unsafe -> the batch policy's name (safegen/jobs/policy.py).
POLICY_NAME = {"blur": "blur", "block": "drop", "black": "black", "keep": "keep"}
API_KEYS_ENV = "SAFEGEN_API_KEYS"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_PORT = 65535


@dataclass
class ServeConfig:
    """The server's settings (the CLI flags of `safegen serve`, one field each)."""

    preset: str | None = field(default=None, metadata={"help": "Named preset (t2i, i2t or both, e.g. toy)."})
    model: str | None = field(default=None, metadata={"help": "Text-to-image base: hub id or folder."})
    safe_encoder: str | None = field(default=None, metadata={"help": "Safe-CLIP text encoder; 'none': original."})
    caption_preset: str | None = field(default=None, metadata={"help": "Preset of the captioner (LLaVA presets)."})
    captioner: str | None = field(default=None, metadata={"help": "Captioner base: hub id or folder."})
    safe_vision_encoder: str | None = field(
        default=None, metadata={"help": "Safe-CLIP vision tower of the captioner."}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind; 0.0.0.0 exposes the server."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps."})
    dtype: str = field(default="auto", metadata={"help": "auto, fp32, fp16, bf16."})
    attention: str = field(default="auto", metadata={"help": "auto, sdpa, xformers, eager."})
    steps: int = field(default=30, metadata={"help": "Denoising steps of requests that give none."})
    guidance: float = field(default=7.5, metadata={"help": "Guidance scale of requests that give none."})
    max_steps: int = field(default=50, metadata={"help": "Most denoising steps a request may ask for."})
    max_batch: int = field(default=4, metadata={"help": "Most images in one pipeline call."})
    max_wait_ms: float = field(default=20.0, metadata={"help": "How long the first request waits for company."})
    queue_size: int = field(default=32, metadata={"help": "Images waiting beyond it are refused with 429."})
    timeout_s: float = field(default=120.0, metadata={"help": "Seconds a request may take before a 504."})
    max_prompt_chars: int = field(default=1000, metadata={"help": "Longest prompt (characters)."})
    max_n: int = field(default=4, metadata={"help": "Most images per request."})
    max_size: int | None = field(default=None, metadata={"help": "Largest side in pixels; None: the model's."})
    max_upload_mb: float = field(default=10.0, metadata={"help": "Largest caption upload (MB)."})
    max_upload_pixels: int = field(default=16_777_216, metadata={"help": "Largest decoded upload (pixels)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest caption a request may ask for."})
    check: str | None = field(default="auto", metadata={"help": "Classifier; auto: the preset's or nudenet."})
    threshold: float | None = field(default=None, metadata={"help": "Classifier threshold; None: its default."})
    on_unsafe: str = field(default="blur", metadata={"help": "blur, block, black or keep flagged images."})
    header_timeout_s: float = field(
        default=10.0, metadata={"help": "Seconds a client has to send a request's headers (then 408, closed)."}
    )
    body_timeout_s: float = field(
        default=60.0, metadata={"help": "Seconds a client has to send a request's body once its headers are in."}
    )
    max_connections: int = field(default=128, metadata={"help": "Open connections; beyond it: 503 and closed."})
    api_keys: list[str] = field(default_factory=list, metadata={"help": "Accepted bearer keys; empty: no auth."})
    allow_compare: bool = field(default=False, metadata={"help": "Let the page show the original beside it."})

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> UsageError:
            return UsageError(f"serve config: {name} {why}")

        positive = (
            "steps",
            "max_steps",
            "max_batch",
            "queue_size",
            "max_prompt_chars",
            "max_n",
            "max_connections",
        )
        for name in positive + ("max_upload_pixels", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.port <= MAX_PORT:
            raise bad("port", f"must be in [1, {MAX_PORT}], got {self.port}")
        if self.steps > self.max_steps:
            raise bad("steps", f"({self.steps}) must not exceed max_steps ({self.max_steps})")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise bad("guidance", f"must be a finite number >= 0, got {self.guidance}")
        if self.threshold is not None and (not math.isfinite(self.threshold) or not 0 <= self.threshold <= 1):
            raise bad("threshold", f"must be a number in [0, 1], got {self.threshold}")
        for name, check in (("device", check_device), ("attention", check_attention)):
            try:  # core/checks' wording under the field's name; before, a bad one failed at model load
                check(getattr(self, name))
            except UsageError as exc:
                raise bad(name, str(exc).split(" ", 1)[-1]) from None
        # "not x >= 0" and "not x > 0" refuse NaN too, as --max-wait-ms and the timeouts' ranges do.
        if not self.max_wait_ms >= 0:
            raise bad("max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        if not self.timeout_s > 0:
            raise bad("timeout_s", f"must be > 0, got {self.timeout_s}")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise bad(name, f"must be > 0, got {getattr(self, name)}")
        if not self.max_upload_mb > 0:
            raise bad("max_upload_mb", f"must be > 0, got {self.max_upload_mb}")
        if self.max_size is not None and (self.max_size < 8 or self.max_size % 8):
            raise bad("max_size", f"must be a multiple of 8 and >= 8, got {self.max_size}")
        if self.on_unsafe not in SERVE_ON_UNSAFE:
            raise bad("on_unsafe", f"must be one of {', '.join(SERVE_ON_UNSAFE)}, got '{self.on_unsafe}'")
        if self.check is not None and self.check.strip().lower() in ("", "none", "off"):
            self.check = None
        per_request = self.max_n * (2 if self.allow_compare else 1)  # a comparison queues both variants
        if self.queue_size < per_request:
            raise bad("queue_size", f"({self.queue_size}) must hold one full request ({per_request} images)")
        # A blank key would be dropped, and with it the login: refuse it instead of serving without one.
        if any(not k or not k.strip() for k in self.api_keys):
            raise bad("api_keys", "holds an empty key (or only spaces); give real keys or none")
        self.api_keys = [k.strip() for k in self.api_keys]

    def engines(self, captions: bool = True) -> tuple[bool, bool]:
        """Whether to serve images and captions: what the preset covers, or what --model/--captioner name.

        ``captions=False`` (--no-captions) turns captions off even where the preset has a captioner.
        """
        task = get_preset(self.preset).task if self.preset else "t2i"
        images = self.model is not None or "t2i" in task
        captions = captions and (self.caption_preset is not None or self.captioner is not None or "i2t" in task)
        if not images and not captions:
            raise UsageError("nothing to serve: pass --preset NAME (see `safegen presets`), --model or --captioner")
        return images, captions

    @property
    def policy(self) -> str:
        """The batch policy name that implements ``on_unsafe``."""
        return POLICY_NAME[self.on_unsafe]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def public_dict(self) -> dict[str, Any]:
        """The settings without the API keys (for logs and `/v1/info`)."""
        d = asdict(self)
        d["api_keys"] = len(self.api_keys)
        return d

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def keys_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """API keys from ``SAFEGEN_API_KEYS`` (comma separated), so keys stay out of shell history and `ps`."""
    raw = (environ if environ is not None else os.environ).get(API_KEYS_ENV, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if raw and not keys:  # set to spaces or commas: the operator meant a key, not an open server
        raise UsageError(f"{API_KEYS_ENV} is set but holds no key (only spaces or commas); set real keys or unset it")
    return keys
