"""The HTTP side (Starlette): OpenAI's completions API over the batchers, the writing page, a
health check; every error in OpenAI's shape with its status, never a traceback for bad input.

Routes: GET / (the page), GET /health, GET /v1/models, POST /v1/completions (JSON, or
server-sent events ending `data: [DONE]` with stream: true). With an API key, /v1/ needs
`Authorization: Bearer KEY`.
"""
import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..completion import check_stop, prepare_prime
from ..errors import CharrnnError
from .batcher import Busy, Job
from .schemas import ApiError, Limits, error_body, parse_completion, parse_json

log = logging.getLogger("charrnn.serve")


@dataclass(frozen=True)
class Settings:
    api_key: str = None          # required as a Bearer token on /v1/ (None: open)
    drop_unknown: bool = False   # leave out prompt characters the model does not know
    max_body: int = 1 << 20      # bytes in a request body (413 beyond)
    limits: Limits = Limits()


def json_response(obj, status=200):
    # ensure_ascii: a lone surrogate from a request's JSON cannot make the answer unencodable
    return Response(json.dumps(obj), status, media_type="application/json")


def error_response(e):
    return json_response(e.body(), e.status)


def build_app(registry, settings=Settings()):
    """The Starlette app serving registry's models."""
    page = resources.files(__package__).joinpath("page", "index.html").read_bytes()

    def check_key(request):
        if settings.api_key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "a valid API key is needed: Authorization: Bearer KEY",
                           code="invalid_api_key")

    async def index(request):
        return Response(page, media_type="text/html; charset=utf-8")

    async def health(request):
        return json_response({"status": "ok", "pid": os.getpid(), "models": {
            n: s.batcher.load() for n, s in registry.models.items()}})

    async def models(request):
        try:
            check_key(request)
        except ApiError as e:
            return error_response(e)
        return json_response({"object": "list",
                              "data": [s.describe() for s in registry.models.values()]})

    async def completions(request):
        jobs = []
        try:
            check_key(request)
            raw = await read_body(request, settings.max_body)
            req = parse_completion(parse_json(raw), settings.limits)
            served = find(registry, req.model)
            if registry.reload:
                await asyncio.to_thread(served.maybe_reload)
            call = Call(req, served, settings)
            jobs = call.submit()
            if req.stream:
                return StreamingResponse(call.events(), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
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
            log.exception("charrnn: internal error in /v1/completions")
            return json_response(error_body(500, "internal error"), 500)

    async def http_error(request, exc):
        return json_response(error_body(exc.status_code, exc.detail or "error"),
                             exc.status_code)

    routes = [Route("/", index), Route("/health", health), Route("/v1/models", models),
              Route("/v1/completions", completions, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


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
            raise ApiError(400, "model is required (GET /v1/models lists them)", "model") \
                from None
        raise ApiError(404, f"no model {name!r} here (GET /v1/models lists them)", "model",
                       "model_not_found") from None


class Call:
    """One completion request: its prompts read, its jobs submitted, their text gathered."""

    def __init__(self, req, served, settings):
        self.req, self.served, self.model = req, served, served.model
        self.id = "cmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        unknown = "drop" if settings.drop_unknown else "error"
        try:
            self.primes = [prepare_prime(self.model, p, unknown) for p in req.prompts]
        except CharrnnError as e:
            msg = str(e).replace("the prime", "the prompt").replace(
                "pass --drop-unknown", "a server started with --drop-unknown would leave")
            raise ApiError(400, msg.replace("would leave to leave", "would leave"), "prompt",
                           "unknown_characters") from None
        try:
            self.stops = tuple(check_stop(self.model, s) for s in req.stop)
        except CharrnnError as e:
            raise ApiError(400, str(e).replace("--stop", "stop"), "stop") from None
        self.queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.jobs = []

    def submit(self):
        r = self.req
        for i, p in enumerate(self.primes):
            job = Job(p.ids, r.n, r.max_tokens, self._deliver(i), temp=r.temperature,
                      top_k=r.top_k, top_p=r.top_p, presence=r.presence_penalty,
                      frequency=r.frequency_penalty, window=r.penalty_window,
                      no_repeat=r.no_repeat, stops=self.stops, logprobs=r.logprobs, seed=r.seed)
            try:
                try:
                    self.served.batcher.submit(job)
                except Busy as e:
                    if e.status != 503 or self.served.batcher.closing:
                        raise
                    self.served.batcher.submit(job)  # the model was reloaded meanwhile
            except Busy as e:
                self.cancel()
                raise ApiError(e.status, str(e)) from None
            self.jobs.append(job)
        return self.jobs

    def _deliver(self, i):
        def deliver(events):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (i, events))
        return deliver

    def cancel(self):
        for j in self.jobs:
            j.cancel()

    def index(self, i, k):
        return i * self.req.n + k

    def usage(self, generated):
        p = sum(len(pr.text) for pr in self.primes)
        return {"prompt_tokens": p, "completion_tokens": generated,
                "total_tokens": p + generated}

    async def _gather(self):
        """(prompt i, events) as the batcher delivers them, until every row has finished."""
        left = len(self.primes) * self.req.n
        while left:
            i, events = await self.queue.get()
            left -= sum(1 for e in events if e[2] is not None)
            yield i, events

    async def _merged(self):
        """Lists of (choice index, text, finish_reason, logprob entries, ids drawn): each
        choice's part of everything the batcher has delivered by now, in one item, so that a
        stream that falls behind catches up in fewer, larger events."""
        left = len(self.primes) * self.req.n
        while left:
            got = [await self.queue.get()]
            while not self.queue.empty():
                got.append(self.queue.get_nowait())
            merged = {}
            for i, events in got:
                for k, text, why, entries, count in events:
                    j = self.index(i, k)
                    if j in merged:
                        _, t0, _, e0, _ = merged[j]
                        merged[j] = (j, t0 + text, why, (e0 or []) + (entries or []), count)
                    else:
                        merged[j] = (j, text, why, entries, count)
                    left -= why is not None
            yield list(merged.values())

    async def whole(self, request):
        """The JSON answer, waiting for every row; a dropped connection cancels the jobs."""
        n = self.req.n
        texts = {}
        finish, lps, counts = {}, {}, {}
        watch = asyncio.ensure_future(_disconnected(request))
        try:
            async for i, events in _until(self._gather(), watch):
                for k, text, why, entries, count in events:
                    j = self.index(i, k)
                    texts[j] = texts.get(j, "") + text
                    lps.setdefault(j, []).extend(entries or [])
                    if why is not None:
                        finish[j], counts[j] = why, count
        finally:
            watch.cancel()
            self.cancel()
        choices = []
        for i, p in enumerate(self.primes):
            for k in range(n):
                j = self.index(i, k)
                echo = p.text if self.req.echo else ""
                choices.append({"text": echo + texts.get(j, ""), "index": j,
                                "logprobs": self._logprobs(lps.get(j, []), echo),
                                "finish_reason": finish.get(j, "length")})
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.served.name, "choices": choices,
                "usage": self.usage(sum(counts.values()))}

    def _logprobs(self, entries, echo, offset=0):
        if self.req.logprobs is None:
            return None
        lead = list(echo)
        return {"tokens": lead + [e[1] for e in entries],
                "token_logprobs": [None] * len(lead) + [e[2] for e in entries],
                "top_logprobs": [None] * len(lead) + [e[3] for e in entries],
                "text_offset": [offset + a for a in range(len(lead))]
                + [offset + len(echo) + e[0] for e in entries]}

    def _chunk(self, j, text, why=None, logprobs=None):
        """One event: the JSON of a completion chunk, its constant part written once (a
        stream sends an event per choice and step)."""
        if not hasattr(self, "_head"):
            self._head = "data: " + json.dumps({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.served.name})[:-1] + ', "choices": [{"text": '
        return (f'{self._head}{json.dumps(text)}, "index": {j}, "logprobs": '
                f'{json.dumps(logprobs)}, "finish_reason": {json.dumps(why)}}}]}}\n\n')

    async def events(self):
        """The server-sent events of a stream; a dropped connection cancels the jobs."""
        generated = 0
        try:
            if self.req.echo:
                for i, p in enumerate(self.primes):
                    for k in range(self.req.n):
                        yield self._chunk(self.index(i, k), p.text)
            async for events in self._merged():
                out = []
                for j, text, why, entries, count in events:
                    lp = None
                    if self.req.logprobs is not None:
                        lp = self._logprobs(entries or [], "")
                    out.append(self._chunk(j, text, why, lp))
                    if why is not None:
                        generated += count
                yield "".join(out)
            if self.req.include_usage:
                yield "data: " + json.dumps({
                    "id": self.id, "object": "text_completion", "created": self.created,
                    "model": self.served.name, "choices": [],
                    "usage": self.usage(generated)}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.cancel()


async def _disconnected(request):
    """Returns when the client has gone."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _until(agen, watch):
    """agen's items until watch (a task) finishes first."""
    while True:
        nxt = asyncio.ensure_future(agen.__anext__())
        done, _ = await asyncio.wait({nxt, watch}, return_when=asyncio.FIRST_COMPLETED)
        if nxt not in done:
            nxt.cancel()
            return
        try:
            yield nxt.result()
        except StopAsyncIteration:
            return
