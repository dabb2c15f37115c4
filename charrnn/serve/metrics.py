"""What the server has done, for people and for Prometheus: GET /metrics in Prometheus's text
format (written by prometheus_client, one registry per app) and one access line per request on
the `charrnn.access` logger (stderr; off with --quiet).

Observe is an ASGI middleware around the app: it counts each request by route and status, and
from the request's Call (left in the scope by the routes) its characters and timings. The
batchers' state (rows writing and waiting, prefix-cache hits) is read when /metrics is
scraped, from whichever batcher serves each model then (a reload starts a new one, whose
counts start at 0: Prometheus's counter reset).
"""

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.routing import Match

access = logging.getLogger("charrnn.access")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# fmt: off
FIRST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # seconds
CHAR_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)     # seconds
# fmt: on


class Batchers:
    """A collector of the batchers' state at the time of a scrape."""

    def __init__(self, models):
        self.models = models  # Registry.models: {id: Served}

    def collect(self):
        writing = GaugeMetricFamily("charrnn_rows_writing", "Rows (samples) being written", labels=["model"])
        waiting = GaugeMetricFamily(
            "charrnn_rows_waiting",
            "Rows submitted and not yet writing (their prompt being read, or the batch full)",
            labels=["model"],
        )
        hits = CounterMetricFamily(
            "charrnn_prefix_cache_hits", "Prompts that started from a cached state", labels=["model"]
        )
        entries = GaugeMetricFamily(
            "charrnn_prefix_cache_entries", "States in the prefix cache", labels=["model"]
        )
        for name, served in list(self.models.items()):
            load = served.batcher.load()
            writing.add_metric([name], load["active"])
            waiting.add_metric([name], load["queued"])
            hits.add_metric([name], load["cache_hits"])
            entries.add_metric([name], load["cache_entries"])
        return [writing, waiting, hits, entries]


class Metrics:
    """The app's metrics, in a registry of its own (several apps may live in one process)."""

    def __init__(self, models):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("charrnn_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.in_flight = Gauge("charrnn_requests_in_flight", "HTTP requests being answered", registry=r)
        self.generated = Counter(
            "charrnn_generated_characters", "Characters generated", ["model"], registry=r
        )
        self.prompt = Counter(
            "charrnn_prompt_characters", "Prompt characters (each prompt once)", ["model"], registry=r
        )
        self.cached = Counter(
            "charrnn_prompt_characters_cached",
            "Prompt characters not read because the prefix cache held their state",
            ["model"],
            registry=r,
        )
        self.first = Histogram(
            "charrnn_time_to_first_character_seconds",
            "From a completion request's arrival to its first character",
            ["model"],
            buckets=FIRST_BUCKETS,
            registry=r,
        )
        self.per_char = Histogram(
            "charrnn_time_per_character_seconds",
            "Time between a row's characters after its first, averaged over a request",
            ["model"],
            buckets=CHAR_BUCKETS,
            registry=r,
        )
        r.register(Batchers(models))

    def text(self):
        return generate_latest(self.registry)

    def finished(self, call):
        """Count a completion or chat request's characters and timings."""
        name = call.served.name
        self.generated.labels(name).inc(call.generated)
        self.prompt.labels(name).inc(call.usage(0)["prompt_tokens"])
        self.cached.labels(name).inc(sum(j.cached for j in call.jobs))
        if call.first is None:
            return
        self.first.labels(name).observe(call.first - call.began)
        per_row = call.generated / max(1, len(call.jobs) * call.req.n)
        if per_row > 1:
            self.per_char.labels(name).observe((call.last - call.first) / (per_row - 1))


class Observe:
    """ASGI middleware: the request counts, the call's metrics and the access line."""

    def __init__(self, app, metrics, routes, log_access=True):
        self.app, self.metrics, self.routes, self.log_access = app, metrics, routes, log_access

    def route_of(self, scope):
        for r in self.routes:
            if r.matches(scope)[0] != Match.NONE:
                return r.path
        return "other"  # unknown paths (404s) together: a label per path would grow unbounded

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.monotonic(), [500]
        route = self.route_of(scope)

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status[0])).inc()
            call = scope.get("charrnn.call")
            if call is not None:
                self.metrics.finished(call)
            if self.log_access:
                chars = "" if call is None else f" {call.generated} chars"
                access.info(
                    "charrnn: %s %s %d%s %.3f s",
                    scope["method"],
                    scope["path"],
                    status[0],
                    chars,
                    time.monotonic() - began,
                )
