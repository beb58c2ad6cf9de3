"""The HTTP side of `tracenet serve`: a page, its two assets, and a small JSON API.

No route maps a request path to a file: the page and assets are read from the package once,
examples come from a fixed table, and sessions are looked up by random id.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from tracenet.serve import render
from tracenet.serve.engine import Engine
from tracenet.serve.examples import EXAMPLES, load_example
from tracenet.serve.limits import FORMATS, InputError, Limits, check_tap, decode_image
from tracenet.serve.sessions import Session, SessionStore

MAX_TAP_BYTES = 1024
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def _package_text(name: str) -> str:
    return resources.files("tracenet.serve").joinpath("static", name).read_text(encoding="utf-8")


def create_app(
    engine: Engine,
    limits: Limits | None = None,
    max_sessions: int = 4,
    allowed_hosts: list[str] | None = None,
    prepare: bool = False,
) -> FastAPI:
    """The app for one engine; `allowed_hosts` guards a loopback server against DNS rebinding;
    `prepare` precomputes the tap-independent part of the trace when an image is opened."""
    limits = limits or Limits()
    store = SessionStore(max_sessions)
    page = _package_text("index.html")
    assets = {name: _package_text(name) for name in ASSETS}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()  # frees every region cache

    app = FastAPI(title="TraceNet demo", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.get("/")
    def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    def asset(name: str) -> Response:
        if name not in assets:
            raise InputError(f"no asset named {name!r}", status=404)
        return Response(assets[name], media_type=f"{ASSETS[name]}; charset=utf-8")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {
            "model": {
                "backbone": engine.info.backbone,
                "source": engine.info.source,
                "min_size": engine.model.cfg.min_size,  # photos are resized to these (the model's
                "max_size": engine.model.cfg.max_size,  # preprocessing); masks come back full size
            },
            "warning": engine.info.warning,
            "limits": {
                "max_bytes": limits.max_bytes,
                "min_side": limits.min_side,
                "max_side": limits.max_side,
                "types": sorted(FORMATS.values()),
            },
            "examples": [{"name": e.name, "title": e.title, "credit": e.credit} for e in EXAMPLES.values()],
        }

    @app.post("/api/sessions")
    async def open_session(request: Request, example: str | None = None) -> dict[str, Any]:
        if example is not None:
            image = await run_in_threadpool(load_example, example)
        else:
            data = await _read_body(request, limits.max_bytes, limits.check_size)
            image = await run_in_threadpool(decode_image, data, limits)
        session = await run_in_threadpool(_open, image)
        width, height = session.size
        return {"session": session.id, "width": width, "height": height, "prepared": session.prepared}

    def _open(image) -> Session:
        session = store.open(image, engine.open_session(image))
        session.photo = render.photo_jpeg(image)
        if prepare:
            with session.using():
                session.prepared = engine.prepare(session.model_session, *session.size)
        return session

    @app.get("/api/sessions/{session_id}/image")
    def photo(session_id: str) -> Response:
        return Response(store.get(session_id).photo, media_type="image/jpeg")

    @app.post("/api/sessions/{session_id}/taps")
    async def tap(session_id: str, request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        body = _parse_tap(await _read_body(request, MAX_TAP_BYTES, _tap_too_big))
        session = store.get(session_id)
        return await run_in_threadpool(_tap, session, body, start)

    def _tap(session: Session, body: dict[str, Any], start: float) -> dict[str, Any]:
        with session.using():
            click = check_tap(body.get("x"), body.get("y"), *session.size)
            result, regions = engine.segment(session.model_session, click)
            session.taps += 1
            if session.taps == 1:
                session.first_macs = int(result.macs)
            session.last = (session.taps, click, result.mask)
            return {
                "tap": session.taps,
                "click": list(click),
                **render.figures(result),
                "first_macs": session.first_macs,
                "mask": render.mask_png(result.mask),
                "regions": regions,
                "server_seconds": time.perf_counter() - start,
            }

    @app.post("/api/sessions/{session_id}/full")
    def full(session_id: str) -> dict[str, Any]:
        session = store.get(session_id)
        with session.using():
            if session.last is None:
                raise InputError("tap the image first; the full forward is compared with the latest tap")
            tap_index, click, trace_mask = session.last
            result = engine.full(session.image, click)
            return {
                "tap": tap_index,
                **render.figures(result),
                "iou_with_trace": render.mask_iou(result.mask, trace_mask),
            }

    return app


async def _read_body(request: Request, max_bytes: int, refuse: Callable[[int], None]) -> bytes:
    """The body, refused (`refuse(size)` raises) as soon as it is known to exceed `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError(f"bad Content-Length header {declared!r}", status=400)
        if int(declared) > max_bytes:
            refuse(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            refuse(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _tap_too_big(size: int) -> None:
    raise InputError(f'a tap is a small JSON object {{"x": ..., "y": ...}}, not {size} bytes', status=413)


def _parse_tap(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise InputError('a tap must be a JSON object {"x": ..., "y": ...} in image pixels', status=400)
    return body
