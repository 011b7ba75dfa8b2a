"""The HTTP API of `safegen serve` (FastAPI), OpenAI-Images compatible.

Endpoints:

- ``POST /v1/images/generations``: the OpenAI Images API body (``prompt``, ``n``, ``size``,
  ``response_format: b64_json``, ``model``) plus ``seed``, ``steps``, ``guidance``,
  ``negative_prompt`` and ``compare``; answers ``{created, data: [{b64_json, ...}]}`` plus
  safegen's fields per image (seed, decision, classifier scores) and the safe encoder id.
- ``POST /v1/captions``: multipart image upload -> safe caption.
- ``GET /v1/models``, ``GET /v1/info`` (limits the web page needs), ``GET /healthz``,
  ``GET /metrics`` (Prometheus text) and the web page at ``/``.

Errors use OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), so the
official client raises its usual exceptions. Requests choose settings within the
operator's limits, never a model, file or path the operator did not configure.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import tempfile
import time
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from safegen.core.seeds import MAX_SEED, random_seed
from safegen.data.image_io import ImageLoadError, load_image
from safegen.serve.batching import DynamicBatcher, QueueFull
from safegen.serve.config import ServeConfig
from safegen.serve.engines import CaptionEngine, CaptionJob, ImageEngine, ImageJob, ImageSettings, caption_key
from safegen.serve.errors import ApiError, SafeJSONResponse
from safegen.serve.guard import Guard
from safegen.serve.metrics import Metrics

_logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
OPEN_PATHS = ("/", "/healthz", "/metrics", "/v1/info")


class ImageRequest(BaseModel):
    """OpenAI's image-generation body plus safegen's settings; unknown OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    model: str | None = None
    n: int | None = 1
    size: str | None = None
    response_format: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    compare: bool = False


class Service:
    """Configuration, engines, batchers and metrics of one running server."""

    def __init__(
        self, config: ServeConfig, image_engine: ImageEngine | None, caption_engine: CaptionEngine | None
    ) -> None:
        if image_engine is None and caption_engine is None:
            raise ValueError("a server needs an image engine, a caption engine, or both")
        self.config, self.images, self.captions = config, image_engine, caption_engine
        self.metrics = Metrics()
        self.started = time.time()
        self._tokens = count()
        wait = config.max_wait_ms / 1000.0
        self.image_batcher = self.caption_batcher = None
        if image_engine is not None:
            self.image_batcher = DynamicBatcher(
                image_engine.render,
                max_batch=config.max_batch,
                max_wait_s=wait,
                queue_size=config.queue_size,
                name="images",
                on_batch=lambda n, s: self.metrics.observe_batch("images", n, s),
                finish=image_engine.finish,
            )
            self.metrics.gauge('safegen_queue_depth{queue="images"}', lambda: self.image_batcher.depth)
            self.metrics.gauge('safegen_running{queue="images"}', lambda: self.image_batcher.running)
        if caption_engine is not None:
            self.caption_batcher = DynamicBatcher(
                caption_engine.caption,
                max_batch=config.max_batch,
                max_wait_s=wait,
                queue_size=config.queue_size,
                name="captions",
                on_batch=lambda n, s: self.metrics.observe_batch("captions", n, s),
            )
            self.metrics.gauge('safegen_queue_depth{queue="captions"}', lambda: self.caption_batcher.depth)
            self.metrics.gauge('safegen_running{queue="captions"}', lambda: self.caption_batcher.running)
        self.metrics.gauge("safegen_uptime_seconds", lambda: time.time() - self.started)

    @property
    def max_side(self) -> int:
        if self.config.max_size:
            return self.config.max_size
        return self.images.default_size if self.images is not None else 512

    def close(self) -> None:
        for batcher in (self.image_batcher, self.caption_batcher):
            if batcher is not None:
                batcher.stop()

    def models(self) -> list[dict[str, Any]]:
        out = []
        if self.images is not None:
            out.append(
                {
                    "id": self.images.model_id,
                    "object": "model",
                    "created": int(self.started),
                    "owned_by": "safegen",
                    "task": "text-to-image",
                    "safe_encoder": self.images.safe_encoder_id,
                    "classifier": self.images.classifier_name,
                }
            )
        if self.captions is not None:
            out.append(
                {
                    "id": self.captions.model_id,
                    "object": "model",
                    "created": int(self.started),
                    "owned_by": "safegen",
                    "task": "image-to-text",
                    "safe_encoder": self.captions.safe_encoder_id,
                }
            )
        return out

    def info(self) -> dict[str, Any]:
        c = self.config
        side = self.images.default_size if self.images is not None else None
        return {
            "models": self.models(),
            "default_size": f"{side}x{side}" if side else None,
            "max_size": self.max_side,
            "max_n": c.max_n,
            "max_steps": c.max_steps,
            "max_prompt_chars": c.max_prompt_chars,
            "max_upload_bytes": c.max_upload_bytes,
            "default_steps": c.steps,
            "default_guidance": c.guidance,
            "allow_compare": bool(c.allow_compare and self.images is not None and self.images.original is not None),
            "auth_required": bool(c.api_keys),
            "on_unsafe": c.on_unsafe,
            "classifier": self.images.classifier_name if self.images is not None else None,
        }

    def token(self) -> int:
        return next(self._tokens)


def create_app(
    config: ServeConfig,
    *,
    image_engine: ImageEngine | None = None,
    caption_engine: CaptionEngine | None = None,
) -> FastAPI:
    """The FastAPI application serving the given engines under ``config``'s limits.

    Engines are loaded by the caller (`safegen serve` loads them from the config before
    binding the port, so a missing model fails with one line instead of a half-up server).
    """
    service = Service(config, image_engine, caption_engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    # 1. The application; answers escape non-ASCII, so no text a client sent can make encoding an answer fail.
    app = FastAPI(
        title="safegen serve",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
    )
    app.state.service = service
    # 2. Every error, the framework's own included, answers in OpenAI's shape.
    _add_error_handlers(app)
    # 3. Outermost of the app's own middleware: it sees every answer, the framework's errors included.
    app.add_middleware(Guard, config=config, metrics=service.metrics, open_paths=OPEN_PATHS, endpoints=_ENDPOINTS)
    # 4. The routes: status, images, captions, the web page.
    _add_status_routes(app, service)
    _add_image_routes(app, service)
    _add_caption_routes(app, service)
    _add_page_routes(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths (404) and wrong methods (405) answer in OpenAI's error shape too, so
        # clients raise their usual exceptions instead of failing to parse FastAPI's.
        response = ApiError(exc.status_code, str(exc.detail)).response()
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "form")]
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return ApiError(400, message, param=".".join(loc) or None).response()


def _add_status_routes(app: FastAPI, service: Service) -> None:
    """``/healthz``, ``/metrics``, ``/v1/models`` and ``/v1/info``."""

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": [m["id"] for m in service.models()],
            "queue": {
                "images": service.image_batcher.depth if service.image_batcher else None,
                "captions": service.caption_batcher.depth if service.caption_batcher else None,
            },
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": service.models()}

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        return service.info()


def _add_image_routes(app: FastAPI, service: Service) -> None:
    """``POST /v1/images/generations``: OpenAI's Images API, plus safegen's settings and verdicts."""
    config = service.config

    @app.post("/v1/images/generations")
    async def generations(body: ImageRequest) -> dict[str, Any]:
        if service.images is None:
            raise ApiError(404, "this server does not generate images (start it with a text-to-image preset)")
        jobs, meta = _plan_images(body, service)
        items = _submit(service.image_batcher, [(j.settings, j) for j in jobs])
        results = await _await(service.image_batcher, items, config.timeout_s)
        for r in results:
            service.metrics.observe_decision(r.decision)
        n = len(jobs) // (2 if body.compare else 1)
        data = []
        for i in range(n):
            safe = results[i]
            entry = _image_entry(safe)
            if body.compare:
                entry["original"] = _image_entry(results[n + i])
            data.append(entry)
        return {
            "created": int(time.time()),
            "data": data,
            "output_format": "png",
            "model": service.images.model_id,
            "safe_encoder": service.images.safe_encoder_id,
            "classifier": service.images.classifier_name,
            "on_unsafe": config.on_unsafe,
            **meta,
        }


def _add_caption_routes(app: FastAPI, service: Service) -> None:
    """``POST /v1/captions``: a multipart image upload in, its safe caption out."""
    config = service.config

    @app.post("/v1/captions")
    async def captions(
        file: UploadFile = File(...),
        prompt: str = Form("Describe this image."),
        model: str | None = Form(None),
        temperature: float = Form(0.0),
        max_new_tokens: int | None = Form(None),
        seed: int | None = Form(None),
    ) -> dict[str, Any]:
        if service.captions is None:
            raise ApiError(404, "this server does not caption images (start it with a captioner preset)")
        tokens = _check_caption_form(service, prompt, model, temperature, max_new_tokens)
        try:
            # Copying and decoding a large upload takes a while: keep the event loop free for other requests.
            image = await asyncio.to_thread(
                _decode_upload, file.file, config.max_upload_bytes, config.max_upload_pixels
            )
        finally:
            await file.close()
        seed = _seed(seed)
        job = CaptionJob(image=image, prompt=prompt, temperature=temperature, max_new_tokens=tokens, seed=seed)
        items = _submit(service.caption_batcher, [(caption_key(job, service.token()), job)])
        (caption,) = await _await(service.caption_batcher, items, config.timeout_s)
        return {
            "created": int(time.time()),
            "caption": caption,
            "model": service.captions.model_id,
            "safe_encoder": service.captions.safe_encoder_id,
            "prompt": prompt,
            "temperature": temperature,
            "max_new_tokens": tokens,
            "seed": seed,
        }


def _check_caption_form(
    service: Service, prompt: str, model: str | None, temperature: float, max_new_tokens: int | None
) -> int:
    """Refuse a caption request outside the server's limits (before the upload is read); its token budget."""
    config = service.config
    if model is not None:
        check_text(model, "model")
    _check_model(model, service.captions.model_id)
    _check_prompt(prompt, config)
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"temperature must be in [0, 2], got {temperature}", param="temperature")
    tokens = config.max_new_tokens if max_new_tokens is None else max_new_tokens
    if not 1 <= tokens <= config.max_new_tokens:
        raise ApiError(400, f"max_new_tokens must be in [1, {config.max_new_tokens}]", param="max_new_tokens")
    return tokens


def _add_page_routes(app: FastAPI) -> None:
    """The web page at ``/`` and its static files."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.post("/", include_in_schema=False)
    async def index_without_script() -> PlainTextResponse:
        # The page's form posts here only when its script did not run: say so and read nothing, so
        # neither the prompt nor the key field lands anywhere (a GET form would put both in the URL).
        return PlainTextResponse("this page needs JavaScript to send a request; nothing was sent", status_code=400)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


_ENDPOINTS = ("/v1/images/generations", "/v1/captions", "/v1/models", "/v1/info")


def _check_model(model: str | None, served: str) -> None:
    if model not in (None, "", served):
        raise ApiError(
            404, f"model '{model}' is not served here; use '{served}' (see /v1/models)", param="model",
            code="model_not_found",
        )  # fmt: skip


def _check_prompt(prompt: str, config: ServeConfig, param: str = "prompt") -> None:
    check_text(prompt, param)
    if not prompt.strip():
        raise ApiError(400, f"{param} is empty", param=param)
    if len(prompt) > config.max_prompt_chars:
        raise ApiError(
            400, f"{param} has {len(prompt)} characters; the limit is {config.max_prompt_chars}", param=param
        )


# C0 controls other than tab, newline and carriage return, and DEL: never part of a prompt.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_text(value: str, param: str) -> None:
    """Refuse text that is not plain Unicode (a lone surrogate, control characters) before it is queued.

    JSON may escape a lone surrogate (``"\\ud800"``), which no tokenizer, PNG chunk or UTF-8
    answer can encode: checked here, the request gets a 400 instead of failing a model call
    (and with it every other request batched into that call).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400, f"{param} is not valid Unicode text (a lone surrogate at character {exc.start})", param=param
        ) from None
    bad = _CONTROL.search(value)
    if bad:
        raise ApiError(
            400, f"{param} holds a control character (U+{ord(bad.group()):04X}) at character {bad.start()}",
            param=param,
        )  # fmt: skip


def _seed(seed: int | None) -> int:
    if seed is None or seed < 0:
        return random_seed()
    if seed > MAX_SEED:
        raise ApiError(400, f"seed must be below 2**63, got {seed}", param="seed")
    return seed


def parse_request_size(size: str | None, default: int, max_side: int) -> tuple[int, int]:
    """'WxH' (or None/'auto': the model's default) -> (width, height) within the server's limits."""
    if size in (None, "", "auto"):
        side = min(default, max_side)
        return side, side
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ApiError(400, f"size '{size}' is not WIDTHxHEIGHT (e.g. {default}x{default})", param="size") from None
    if not (8 <= w <= max_side and 8 <= h <= max_side) or w % 8 or h % 8:
        raise ApiError(
            400,
            f"size {w}x{h} is not served: each side must be a multiple of 8 between 8 and {max_side}",
            param="size",
        )
    return w, h


def _plan_images(body: ImageRequest, service: Service) -> tuple[list[ImageJob], dict[str, Any]]:
    config = service.config
    _check_prompt(body.prompt, config)
    for param in ("model", "size", "response_format", "negative_prompt"):
        if getattr(body, param) is not None:
            check_text(getattr(body, param), param)
    _check_model(body.model, service.images.model_id)
    if body.response_format not in (None, "b64_json"):
        raise ApiError(
            400,
            f"response_format '{body.response_format}' is not supported; use 'b64_json' (no files are kept)",
            param="response_format",
        )
    n = 1 if body.n is None else body.n
    if not 1 <= n <= config.max_n:
        raise ApiError(400, f"n must be in [1, {config.max_n}], got {n}", param="n")
    steps = config.steps if body.steps is None else body.steps
    if not 1 <= steps <= config.max_steps:
        raise ApiError(400, f"steps must be in [1, {config.max_steps}], got {steps}", param="steps")
    guidance = config.guidance if body.guidance is None else body.guidance
    if not 0 <= guidance <= 30:
        raise ApiError(400, f"guidance must be in [0, 30], got {guidance}", param="guidance")
    negative = body.negative_prompt or ""
    if negative:
        _check_prompt(negative, config, "negative_prompt")
    if body.compare and service.images.original is None:
        raise ApiError(
            403, "comparisons with the original model are off on this server (--allow-compare)", param="compare"
        )
    width, height = parse_request_size(body.size, service.images.default_size, service.max_side)
    seed = _seed(body.seed)
    if seed + n - 1 > MAX_SEED:
        raise ApiError(400, "seed + n - 1 must stay below 2**63", param="seed")
    variants = ["safe", "original"] if body.compare else ["safe"]
    jobs = [
        ImageJob(body.prompt, seed + i, ImageSettings(steps, guidance, width, height, negative, variant))
        for variant in variants
        for i in range(n)
    ]
    meta = {"seed": seed, "steps": steps, "guidance": guidance, "size": f"{width}x{height}"}
    # The text encoder reads a fixed number of tokens; say what it did not read, as `safegen t2i` does.
    meta["prompt_truncated"] = service.images.prompt_overflow(body.prompt)
    return jobs, meta


def _submit(batcher: DynamicBatcher, work: list[tuple[Any, Any]]) -> list[Any]:
    try:
        return batcher.submit(work)
    except QueueFull as exc:
        raise ApiError(
            429,
            f"the server is busy ({exc.depth} of {exc.capacity} queued); retry in {exc.retry_after} s",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except RuntimeError as exc:
        raise ApiError(503, str(exc), type="server_error") from None


async def _await(batcher: DynamicBatcher, items: list[Any], timeout: float) -> list[Any]:
    try:
        return await asyncio.wait_for(asyncio.gather(*(it.future for it in items)), timeout)
    except asyncio.TimeoutError:
        batcher.cancel(items)
        raise ApiError(
            504, f"the request took longer than the server's {timeout:g} s limit", type="timeout", code="timeout"
        ) from None
    except asyncio.CancelledError:  # the client went away: free the queue
        batcher.cancel(items)
        raise
    except ApiError:
        raise
    except Exception as exc:
        _logger.error("generation failed: %s", exc)
        raise ApiError(500, f"generation failed: {exc}", type="server_error") from None


def _image_entry(result: Any) -> dict[str, Any]:
    return {
        "b64_json": base64.b64encode(result.png).decode("ascii") if result.png is not None else None,
        "revised_prompt": None,
        "seed": result.seed,
        "decision": result.decision,
        "safety": result.safety,
    }


def _decode_upload(source: BinaryIO, max_bytes: int, max_pixels: int) -> Any:
    """Open an upload with the project's one image loader (pixel limit, EXIF orientation, one-line errors).

    The loader reads files, so the upload is copied into a private temporary folder first
    (mode 0700, removed at once); the copy stops at ``max_bytes``.
    """
    with tempfile.TemporaryDirectory(prefix="safegen-upload-") as folder:
        path = Path(folder) / "upload"
        size = 0
        with open(path, "wb") as out:
            while chunk := source.read(1024 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, f"the upload exceeds {max_bytes} bytes", param="file")
                out.write(chunk)
        if size == 0:
            raise ApiError(400, "the uploaded file is empty", param="file")
        try:
            return load_image(path, max_pixels=max_pixels)
        except ImageLoadError as exc:
            # The loader names the file; the client must not learn the server's temporary path.
            reason = str(exc).replace(f"{path}: ", "").replace(str(path), "the upload")
            # Too many pixels (a possible decompression bomb) is a size refusal, like a large body.
            status = 413 if "pixel" in reason or "bomb" in reason else 400
            raise ApiError(status, f"the upload was refused: {reason}", param="file") from None
