"""One error shape for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error answered to the client with a stable code, a message and optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else []
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ErrorInfo(BaseModel):
    """What went wrong: a stable code, a message, and details such as the JSON path of each problem."""

    code: str
    message: str
    details: list[dict[str, Any]] | dict[str, Any] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorInfo


# for the OpenAPI document of routers: `APIRouter(responses=ERROR_RESPONSES)`
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or invalid credentials"},
    404: {"model": ErrorBody, "description": "not found (also for other partners' objects)"},
    422: {"model": ErrorBody, "description": "invalid parameters; details give the path of each problem"},
}


def error_response(err: ApiError) -> JSONResponse:
    """The HTTP response for an ApiError."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def _loc_to_path(loc: tuple[Any, ...] | list[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, including framework ones and crashes, use the one error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(
            {"error": {"code": code, "message": message, "details": []}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "path": _loc_to_path(err.get("loc", ())),
                "code": err.get("type", "invalid"),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        return JSONResponse(
            {"error": {"code": "validation_error", "message": "the request is not valid", "details": details}},
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "an unexpected error occurred", "details": []}},
            status_code=500,
        )
