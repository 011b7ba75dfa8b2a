"""`safegen serve`: the safe generation and captioning service (HTTP, OpenAI-Images compatible)."""

from __future__ import annotations

import logging
from typing import Annotated

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
from safegen.core.errors import SafegenError, UsageError

_logger = logging.getLogger(__name__)


@cli_errors
def serve(
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    caption_preset: Annotated[
        str | None, typer.Option("--caption-preset", help="Also caption with this preset (e.g. llava-1.5-7b).")
    ] = None,
    captioner: Annotated[str | None, captioner_option("Captioner base: hub id or folder.")] = None,
    safe_vision_encoder: Annotated[
        str | None, safe_vision_encoder_option("Safe-CLIP vision tower for the captioner.")
    ] = None,
    captions: Annotated[
        bool, typer.Option("--captions/--no-captions", help="Serve /v1/captions when the preset has a captioner.")
    ] = True,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; 127.0.0.1 keeps it local, 0.0.0.0 exposes it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    steps: Annotated[int, steps_option("Steps of requests that give none.")] = 30,
    guidance: Annotated[float, guidance_option("Guidance of requests that give none.", cfg=False, minimum=0.0)] = 7.5,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Most steps a request may ask for.")] = 50,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most images per pipeline call.")] = 4,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0.0, help="How long a request waits for others to batch with.")
    ] = 20.0,
    queue_size: Annotated[
        int, typer.Option("--queue-size", min=1, help="Images allowed to wait; beyond it: 429 + Retry-After.")
    ] = 32,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds per request before a 504.")] = 120.0,
    max_prompt_chars: Annotated[int, typer.Option("--max-prompt-chars", min=1, help="Longest prompt.")] = 1000,
    max_n: Annotated[int, typer.Option("--max-n", min=1, help="Most images per request.")] = 4,
    max_size: Annotated[
        int | None, typer.Option("--max-size", help="Largest image side in pixels; default: the model's.")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest caption upload.")] = 10.0,
    check: Annotated[
        str, check_option("Output classifier: auto (the preset's, else nudenet), nudenet, toy, none.")
    ] = "auto",
    threshold: ThresholdOpt = None,
    on_unsafe: Annotated[str, on_unsafe_option("Flagged images: blur, block (withhold), black or keep.")] = "blur",
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Accepted bearer key (repeatable); or set SAFEGEN_API_KEYS=k1,k2."),
    ] = None,
    allow_compare: Annotated[
        bool, typer.Option("--allow-compare", help="Let clients see the original image beside the safe one.")
    ] = False,
    header_timeout: Annotated[
        float, typer.Option("--header-timeout", min=0.001, help="Seconds a client has to send its headers.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", min=0.001, help="Seconds a client has to send its body.")
    ] = 60.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", min=1, help="Open connections; beyond it: 503.")
    ] = 128,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="uvicorn's log level; default warning (-v: info, with access lines)."),
    ] = None,
) -> None:
    """Serve safe text-to-image (and captions) over HTTP: OpenAI-Images API, web page at /.

    Binds 127.0.0.1 unless --host says otherwise. `safegen serve --preset toy` runs offline.
    """
    try:
        import uvicorn

        from safegen.serve import ServeConfig, create_app, keys_from_env
        from safegen.serve.engines import load_caption_engine, load_image_engine
        from safegen.serve.server import uvicorn_config
    except ImportError as exc:
        raise SafegenError(
            f"the serve extra is not installed ({exc.name} missing); pip install 'safegen[serve]'"
        ) from None
    from safegen.models.presets import get_preset

    keys = list(api_key or []) + keys_from_env()
    config = ServeConfig(
        preset=preset,
        model=model,
        safe_encoder=safe_encoder,
        caption_preset=caption_preset,
        captioner=captioner,
        safe_vision_encoder=safe_vision_encoder,
        host=host,
        port=port,
        device=device,
        dtype=dtype,
        attention=attention,
        steps=steps,
        guidance=guidance,
        max_steps=max_steps,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        timeout_s=timeout,
        max_prompt_chars=max_prompt_chars,
        max_n=max_n,
        max_size=max_size,
        max_upload_mb=max_upload_mb,
        check=check,
        threshold=threshold,
        on_unsafe=on_unsafe,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_connections=max_connections,
        api_keys=keys,
        allow_compare=allow_compare,
    )
    task = get_preset(preset).task if preset else "t2i"
    want_images = model is not None or "t2i" in task
    want_captions = captions and (caption_preset is not None or captioner is not None or "i2t" in task)
    if not want_images and not want_captions:
        raise UsageError("nothing to serve: pass --preset NAME (see `safegen presets`), --model or --captioner")
    err = console()
    if not config.is_loopback and not config.api_keys:
        err.print(
            f"warning: serving on {host} without an API key: anyone who can reach this address can generate; "
            "pass --api-key or set SAFEGEN_API_KEYS",
            markup=False,
        )
    with err.status("loading models"):
        image_engine = load_image_engine(config) if want_images else None
        caption_engine = load_caption_engine(config) if want_captions else None
    app = create_app(config, image_engine=image_engine, caption_engine=caption_engine)
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"safegen serve: http://{shown}:{port}/  (OpenAI base_url http://{shown}:{port}/v1)",
        markup=False,
        soft_wrap=True,
    )
    server = uvicorn.Server(uvicorn_config(app, config, host=host, port=port, log_level=log_level or _log_level()))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on; stopping is the normal end
        pass


def _log_level() -> str:
    """uvicorn follows the terminal's loudness: its banner and access lines only with -v."""
    from safegen.core.terminal import QUIET, VERBOSE, verbosity
    from safegen.serve.server import DEFAULT_LOG_LEVEL

    level = verbosity()
    return "info" if level is not None and level >= VERBOSE else "error" if level == QUIET else DEFAULT_LOG_LEVEL
