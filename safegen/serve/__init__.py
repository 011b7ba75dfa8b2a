"""`safegen serve`: safe image generation and captioning over HTTP (OpenAI-Images compatible).

The service batches concurrent requests into shared model calls, refuses work it cannot
queue (429 + Retry-After), applies the same output policy as `safegen batch`, and serves a
small web page. FastAPI and uvicorn come with the ``serve`` extra
(``pip install 'safegen[serve]'``); nothing here is imported by ``import safegen``.

Python use::

    from safegen.serve import ServeConfig, create_app, load_image_engine
    config = ServeConfig(preset="toy")
    app = create_app(config, image_engine=load_image_engine(config))
"""

from __future__ import annotations

from safegen.serve.config import ServeConfig, keys_from_env

__all__ = ["ServeConfig", "create_app", "keys_from_env", "load_caption_engine", "load_image_engine"]


def __getattr__(name: str):
    # FastAPI and torch load only when the app or an engine is asked for.
    if name == "create_app":
        from safegen.serve.app import create_app

        return create_app
    if name in ("load_image_engine", "load_caption_engine"):
        from safegen.serve import engines

        return getattr(engines, name)
    raise AttributeError(f"module 'safegen.serve' has no attribute {name!r}")
