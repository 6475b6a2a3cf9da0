"""Errors as RFC 9457 ``application/problem+json``, for every failure the API returns."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA = "application/problem+json"


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str = "", **extra: object) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def response(status: int, title: str, detail: str, request: Request, **extra: object) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.url.path, **extra}
    return JSONResponse(body, status_code=status, media_type=MEDIA)


PROBLEM_SCHEMA = {
    "title": "Problem", "type": "object", "required": ["title", "status"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "instance": {"type": "string"},
                   "errors": {"type": "array", "items": {"type": "object"}}},
}


def _document_problems(app: FastAPI) -> None:
    """The OpenAPI document says what errors really are: FastAPI documents its 422 as ``application/json``
    with its own body, which a client generated from the document would then fail to read."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    for code, resp in op.get("responses", {}).items():
                        if code[:1] in ("4", "5") and "content" in resp:
                            resp["content"] = {MEDIA: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document_problems(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return response(exc.status, exc.title, exc.detail, request, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [{"where": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['where']}: {e['msg']}" for e in errors)
        return response(422, "Invalid request", detail, request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return response(exc.status_code, str(exc.detail), str(exc.detail), request)
