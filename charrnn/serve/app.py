"""The HTTP side (Starlette): OpenAI's completions API over the batchers, the writing page, a
health check; every error in OpenAI's shape with its status, never a traceback for bad input.

Routes: GET / (the page), GET /health, GET /metrics (Prometheus), GET /v1/models, GET
/v1/models/{id}, POST /v1/completions and POST /v1/chat/completions (JSON, or server-sent
events ending `data: [DONE]` with stream: true). With an API key, /v1/ needs
`Authorization: Bearer KEY`. Around them, metrics.Observe counts and logs each request.
"""

import asyncio
import hmac
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from . import template
from .calls import Call, EventStream
from .chat import ChatCall, parse_chat
from .metrics import CONTENT_TYPE, Metrics, Observe
from .schemas import ApiError, Limits, error_body, parse_completion, parse_json

log = logging.getLogger("charrnn.serve")


@dataclass(frozen=True)
class Settings:
    # fmt: off
    api_key: str = None          # required as a Bearer token on /v1/ (None: open)
    drop_unknown: bool = False   # leave out prompt characters the model does not know
    max_body: int = 1 << 20      # bytes in a request body (413 beyond)
    limits: Limits = Limits()
    chat_templates: dict = field(default_factory=dict)  # {model id: ChatTemplate} (else plain)
    access_log: bool = True      # one line per request on the charrnn.access logger
    # fmt: on

    def template_of(self, name):
        return self.chat_templates.get(name, template.PRESETS["plain"])


def json_response(obj, status=200):
    # ensure_ascii: a lone surrogate from a request's JSON cannot make the answer unencodable
    return Response(json.dumps(obj), status, media_type="application/json")


def error_response(e):
    return json_response(e.body(), e.status)


def build_app(registry, settings=Settings()):
    """The app serving registry's models: Starlette's, inside metrics.Observe."""
    page = resources.files(__package__).joinpath("page", "index.html").read_bytes()
    metrics = Metrics(registry.models)

    def check_key(request):
        if settings.api_key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise ApiError(
                401, "a valid API key is needed: Authorization: Bearer KEY", code="invalid_api_key"
            )

    async def index(request):
        return Response(page, media_type="text/html; charset=utf-8")

    async def health(request):
        return json_response(
            {
                "status": "ok",
                "pid": os.getpid(),
                "models": {n: s.batcher.load() for n, s in registry.models.items()},
            }
        )

    async def prometheus(request):
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    async def models(request):
        try:
            check_key(request)
        except ApiError as e:
            return error_response(e)
        return json_response({"object": "list", "data": [describe(s) for s in registry.models.values()]})

    def describe(served):
        return dict(served.describe(), chat_template=settings.template_of(served.name).describe())

    async def model(request):
        try:
            check_key(request)
            return json_response(describe(find(registry, request.path_params["id"])))
        except ApiError as e:
            return error_response(e)

    async def completions(request):
        return await answer(request, lambda body: parse_completion(body, settings.limits), Call)

    async def chat(request):
        def parse(body):
            name = body.get("model")
            if name is not None and not isinstance(name, str):
                raise ApiError(400, "model must be a string", "model")
            return parse_chat(body, settings.template_of(find(registry, name).name), settings.limits)

        return await answer(request, parse, ChatCall)

    async def answer(request, parse, kind):
        """A completion or chat request's answer: parse(body) the request, kind its Call."""
        jobs = []
        try:
            check_key(request)
            raw = await read_body(request, settings.max_body)
            req = parse(parse_json(raw))
            served = find(registry, req.model)
            if registry.reload:
                await asyncio.to_thread(served.maybe_reload)
            call = kind(req, served, settings)
            request.scope["charrnn.call"] = call  # for the access line and the metrics
            jobs = call.submit()
            if req.stream:
                return EventStream(call)
            return json_response(await call.whole(request))
        except ApiError as e:
            for j in jobs:
                j.cancel()
            return error_response(e)
        except ClientDisconnect:
            for j in jobs:
                j.cancel()
            return Response(status_code=400)
        except Exception:  # a bug, not the request's fault: one logged trace, a 500 body
            for j in jobs:
                j.cancel()
            log.exception("charrnn: internal error in %s", request.url.path)
            return json_response(error_body(500, "internal error"), 500)

    async def http_error(request, exc):
        return json_response(error_body(exc.status_code, exc.detail or "error"), exc.status_code)

    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/metrics", prometheus),
        Route("/v1/models", models),
        Route("/v1/models/{id:path}", model),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return Observe(app, metrics, routes, settings.access_log)


async def read_body(request, limit):
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def find(registry, name):
    try:
        return registry.get(name)
    except KeyError:
        if name is None:
            raise ApiError(400, "model is required (GET /v1/models lists them)", "model") from None
        raise ApiError(
            404, f"no model {name!r} here (GET /v1/models lists them)", "model", "model_not_found"
        ) from None
