"""The API's error type: everything the emulator refuses becomes one of these, as JSON."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, guidance: str | None = None,
                 url: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.guidance = guidance
        self.url = url
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.guidance:
            error["guidance"] = self.guidance
        if self.url:
            error["url"] = self.url
        error.update(self.extra)
        return {"error": error}


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def not_found(what: str = "no such resource") -> ApiError:
    return ApiError(404, "not_found", what)
