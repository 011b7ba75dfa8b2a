"""`safegen serve`: the safe generation and captioning service (HTTP, OpenAI-Images compatible)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from safegen.cli._common import cli_errors, console
from safegen.cli.options import (
    AttentionOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    PresetOpt,
    SafeEncoderOpt,
    ThresholdOpt,
    captioner_option,
    check_option,
    guidance_option,
    on_unsafe_option,
    safe_vision_encoder_option,
    steps_option,
)
from safegen.core.errors import SafegenError

_logger = logging.getLogger(__name__)

# `safegen serve`'s own options (the shared ones: cli/options.py); each maps onto a ServeConfig field.
CaptionPresetOpt = Annotated[
    str | None, typer.Option("--caption-preset", help="Also caption with this preset (e.g. llava-1.5-7b).")
]
SafeVisionOpt = Annotated[str | None, safe_vision_encoder_option("Safe-CLIP vision tower for the captioner.")]
CaptionsOpt = Annotated[
    bool, typer.Option("--captions/--no-captions", help="Serve /v1/captions when the preset has a captioner.")
]
HostOpt = Annotated[str, typer.Option("--host", help="Address to bind; 127.0.0.1 keeps it local, 0.0.0.0 exposes it.")]
MaxWaitOpt = Annotated[
    float, typer.Option("--max-wait-ms", min=0.0, help="How long a request waits for others to batch with.")
]
QueueSizeOpt = Annotated[
    int, typer.Option("--queue-size", min=1, help="Images allowed to wait; beyond it: 429 + Retry-After.")
]
MaxSizeOpt = Annotated[
    int | None, typer.Option("--max-size", help="Largest image side in pixels; default: the model's.")
]
ServeCheckOpt = Annotated[
    str, check_option("Output classifier: auto (the preset's, else nudenet), nudenet, toy, none.")
]
ApiKeyOpt = Annotated[
    list[str] | None,
    typer.Option("--api-key", help="Accepted bearer key (repeatable); or set SAFEGEN_API_KEYS=k1,k2."),
]
AllowCompareOpt = Annotated[
    bool, typer.Option("--allow-compare", help="Let clients see the original image beside the safe one.")
]
HeaderTimeoutOpt = Annotated[
    float, typer.Option("--header-timeout", min=0.001, help="Seconds a client has to send its headers.")
]
BodyTimeoutOpt = Annotated[
    float, typer.Option("--body-timeout", min=0.001, help="Seconds a client has to send its body.")
]
MaxConnectionsOpt = Annotated[int, typer.Option("--max-connections", min=1, help="Open connections; beyond it: 503.")]
LogLevelOpt = Annotated[
    str | None,
    typer.Option("--log-level", help="uvicorn's log level; default warning (-v: info, with access lines)."),
]


# `safegen serve`'s flags are ServeConfig's fields of the same name, but for these three, --api-key (api_keys,
# with SAFEGEN_API_KEYS) and the two that are not settings of the server (--captions, --log-level).
FIELD_OF_FLAG = {"timeout": "timeout_s", "header_timeout": "header_timeout_s", "body_timeout": "body_timeout_s"}
NOT_FIELDS = ("api_key", "captions", "log_level")


@cli_errors
def serve(
    ctx: typer.Context,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    caption_preset: CaptionPresetOpt = None,
    captioner: Annotated[str | None, captioner_option("Captioner base: hub id or folder.")] = None,
    safe_vision_encoder: SafeVisionOpt = None,
    captions: CaptionsOpt = True,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    steps: Annotated[int, steps_option("Steps of requests that give none.")] = 30,
    guidance: Annotated[float, guidance_option("Guidance of requests that give none.", cfg=False, minimum=0.0)] = 7.5,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Most steps a request may ask for.")] = 50,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most images per pipeline call.")] = 4,
    max_wait_ms: MaxWaitOpt = 20.0,
    queue_size: QueueSizeOpt = 32,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds per request before a 504.")] = 120.0,
    max_prompt_chars: Annotated[int, typer.Option("--max-prompt-chars", min=1, help="Longest prompt.")] = 1000,
    max_n: Annotated[int, typer.Option("--max-n", min=1, help="Most images per request.")] = 4,
    max_size: MaxSizeOpt = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest caption upload.")] = 10.0,
    check: ServeCheckOpt = "auto",
    threshold: ThresholdOpt = None,
    on_unsafe: Annotated[str, on_unsafe_option("Flagged images: blur, block (withhold), black or keep.")] = "blur",
    api_key: ApiKeyOpt = None,
    allow_compare: AllowCompareOpt = False,
    header_timeout: HeaderTimeoutOpt = 10.0,
    body_timeout: BodyTimeoutOpt = 60.0,
    max_connections: MaxConnectionsOpt = 128,
    log_level: LogLevelOpt = None,
) -> None:
    """Serve safe text-to-image (and captions) over HTTP: OpenAI-Images API, web page at /.

    Binds 127.0.0.1 unless --host says otherwise. `safegen serve --preset toy` runs offline.
    """
    try:  # the serve extra: fastapi and uvicorn
        import uvicorn  # noqa: F401

        from safegen.serve import ServeConfig, create_app, keys_from_env
        from safegen.serve.engines import load_caption_engine, load_image_engine
        from safegen.serve.server import serve_forever
    except ImportError as exc:
        raise SafegenError(
            f"the serve extra is not installed ({exc.name} missing); pip install 'safegen[serve]'"
        ) from None

    # 1. The settings, checked (ServeConfig) before any model loads.
    config = ServeConfig(**config_fields(ctx.params), api_keys=list(api_key or []) + keys_from_env())
    want_images, want_captions = config.engines(captions)
    err = console()
    warn_if_open(err, config)
    # 2. The models, then the app.
    with err.status("loading models"):
        image_engine = load_image_engine(config) if want_images else None
        caption_engine = load_caption_engine(config) if want_captions else None
    app = create_app(config, image_engine=image_engine, caption_engine=caption_engine)
    # 3. Serve in the foreground until Ctrl-C.
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"safegen serve: http://{shown}:{port}/  (OpenAI base_url http://{shown}:{port}/v1)",
        markup=False,
        soft_wrap=True,
    )
    serve_forever(app, config, log_level=log_level or _log_level())


def config_fields(flags: dict[str, Any]) -> dict[str, Any]:
    """The command's flags (click's ``ctx.params``) under their ServeConfig field names: a new flag that is
    not a field fails ServeConfig (TypeError, tests/test_serve_api.py), it is not dropped."""
    return {FIELD_OF_FLAG.get(name, name): value for name, value in flags.items() if name not in NOT_FIELDS}


def warn_if_open(err: Any, config: Any) -> None:
    """Say on stderr when anyone who can reach the address can generate: not loopback, and no API key."""
    if not config.is_loopback and not config.api_keys:
        err.print(
            f"warning: serving on {config.host} without an API key: anyone who can reach this address can generate; "
            "pass --api-key or set SAFEGEN_API_KEYS",
            markup=False,
        )


def _log_level() -> str:
    """uvicorn follows the terminal's loudness: its banner and access lines only with -v."""
    from safegen.core.terminal import QUIET, VERBOSE, verbosity
    from safegen.serve.server import DEFAULT_LOG_LEVEL

    level = verbosity()
    return "info" if level is not None and level >= VERBOSE else "error" if level == QUIET else DEFAULT_LOG_LEVEL
