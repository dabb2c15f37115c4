"""Running the server: uvicorn over build_app, loopback by default, SIGTERM and Ctrl-C drain the
requests in flight and return normally (exit 0), --workers N runs N processes.

With one worker the models load in this process and uvicorn runs here; its signal handling is
replaced by one that only asks the server to stop (uvicorn's re-raises the signal once it has
stopped, which would end the process by that signal, not with 0). With several, uvicorn's
supervisor starts N processes on the same socket, each of which loads the models (the options
reach them in the environment, CHARRNN_SERVE_OPTIONS), and restarts one that dies.
"""

import contextlib
import copy
import ipaddress
import json
import os
import signal
import sys
import threading

import uvicorn

from . import template
from .app import Settings, build_app
from .chat import check_template
from .models import Registry
from .schemas import Limits
from .stepper import warm

OPTIONS_ENV = "CHARRNN_SERVE_OPTIONS"
KEY_ENV = "CHARRNN_API_KEY"
DRAIN_SECONDS = 120  # the longest a shutdown waits for requests in flight
SWITCH_INTERVAL = 0.0005  # seconds: see make_app


def is_loopback(host):
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(uvicorn.Server):
    """uvicorn's server, whose SIGINT and SIGTERM only ask it to stop (and drain), and which
    says when it listens (ready: called once the socket is bound)."""

    def __init__(self, config, ready=lambda: None):
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started:
            self.ready()

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGINT, signal.SIGTERM)
        old = {s: signal.signal(s, self.handle_exit) for s in sigs}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def make_app(options):
    """(app, registry) of the options serve() takes (JSON-able: a worker gets them so)."""
    # The batcher's thread gives the GIL up in each kernel call and must get it back from the
    # event loop's thread; at the default 5 ms switch interval that wait was most of a tick.
    sys.setswitchinterval(SWITCH_INTERVAL)
    reg = Registry(
        options["checkpoints"],
        reload=options["reload"],
        max_batch=options["max_batch"],
        max_queue=options["max_queue"],
    )
    templates = template.for_models(options.get("chat_templates", []), list(reg.models))
    for name, t in templates.items():
        check_template(t, reg.get(name).model, name)
    for s in reg.models.values():
        warm(s.model.config.cell, s.model.dtype)
    settings = Settings(
        chat_templates=templates,
        access_log=not options.get("quiet", False),
        api_key=options["api_key"],
        drop_unknown=options["drop_unknown"],
        max_body=options["max_body"],
        limits=Limits(
            max_tokens=options["max_tokens"],
            max_n=options["max_n"],
            default_max_tokens=options.get("default_max_tokens", Limits.default_max_tokens),
        ),
    )
    return build_app(reg, settings), reg


def worker_app():
    """The app of one of --workers' processes (uvicorn's factory)."""
    return make_app(json.loads(os.environ[OPTIONS_ENV]))[0]


def serve(
    checkpoints,
    host="127.0.0.1",
    port=8000,
    max_batch=64,
    max_queue=256,
    api_key=None,
    drop_unknown=False,
    reload=False,
    workers=1,
    max_tokens=4096,
    default_max_tokens=Limits.default_max_tokens,
    max_n=16,
    max_body=1 << 20,
    chat_templates=(),
    quiet=False,
    report=lambda line: None,
    log_level="info",
):
    """Serve the models until SIGTERM or Ctrl-C; report(line) gets the lines for the user,
    the first saying where. checkpoints: what -c names, each (files, runs, directories)."""
    api_key = api_key or os.environ.get(KEY_ENV) or None
    url = f"http://{_url_host(host)}:{port}/"
    report(
        f"charrnn: serving {len(checkpoints)} model{'s'[: len(checkpoints) != 1]} at {url} "
        "(the page; the API under /v1/), once loaded and warmed up"
    )
    if not is_loopback(host) and api_key is None:
        report(
            f"charrnn: warning: {host} is reachable beyond this machine and there is no "
            f"API key; pass --api-key or set {KEY_ENV}"
        )
    options = dict(
        checkpoints=[None if c is None else str(c) for c in checkpoints],
        reload=reload,
        max_batch=max_batch,
        max_queue=max_queue,
        api_key=api_key,
        drop_unknown=drop_unknown,
        max_body=max_body,
        max_tokens=max_tokens,
        default_max_tokens=default_max_tokens,
        max_n=max_n,
        chat_templates=list(chat_templates),
        quiet=quiet,
    )
    common = dict(
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config(),
        access_log=False,  # metrics.Observe writes one line per request, with its characters
        timeout_graceful_shutdown=DRAIN_SECONDS,
    )
    if workers > 1:
        os.environ[OPTIONS_ENV] = json.dumps(options)
        uvicorn.run("charrnn.serve.server:worker_app", factory=True, workers=workers, **common)
        return
    app, reg = make_app(options)
    for note in reg.notes():
        report(f"charrnn: {note}")
    for s in reg.models.values():
        report(f"charrnn: {s.name}: {s.loaded()}")
    try:
        Server(
            uvicorn.Config(app, lifespan="off", **common), ready=lambda: report(f"charrnn: ready at {url}")
        ).run()
    finally:
        reg.close()


def log_config():
    """uvicorn's logging, all of it on stderr (its access log goes to stdout by default), and
    charrnn's lines (the access lines, reloads) on stderr as they are written."""
    cfg = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for handler in cfg["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    cfg["formatters"]["charrnn"] = {"format": "%(message)s"}
    cfg["handlers"]["charrnn"] = {
        "class": "logging.StreamHandler",
        "formatter": "charrnn",
        "stream": "ext://sys.stderr",
    }
    cfg["loggers"]["charrnn"] = {"handlers": ["charrnn"], "level": "INFO", "propagate": False}
    return cfg


def _url_host(host):
    return f"[{host}]" if ":" in host else host
