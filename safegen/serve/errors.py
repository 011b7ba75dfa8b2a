"""Answers other than 200, in OpenAI's error shape, for the app and the ASGI guard around it.

Kept apart from app.py so the guard (which runs before any route) can answer with the same
shape without importing the routes.
"""

from __future__ import annotations

import json

from starlette.responses import JSONResponse


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so text a client sent (a lone surrogate included) can never fail to encode."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class ApiError(Exception):
    """An answer other than 200, in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, **extra
    ):
        self.status, self.message, self.type, self.param = status, message, type, param
        self.code = extra.pop("code", None)
        self.headers: dict[str, str] = extra.pop("headers", {})
        super().__init__(message)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return SafeJSONResponse(self.body(), status_code=self.status, headers=self.headers)
