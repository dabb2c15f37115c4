"""`charrnn serve`: OpenAI's completions and chat API over continuously batched models, a page
to write with them, a prefix state cache for prompts that grow, and metrics (docs/serving.md).

Modules: schemas (requests and errors in OpenAI's shapes), stepper (one model's kernels: rows
written K characters a call, prompts read together), cache (prefix states), jobs (a request's
rows and how their characters are cut), batcher (continuous batching: a writing and a reading
thread), models
(loading and reloading), calls (a completion request's life), chat and template (chat
completions, and how a conversation becomes a character model's text), metrics (/metrics and
the access lines), app (the Starlette routes), server (uvicorn, signals, workers) and
page/index.html. The HTTP stack (uvicorn, Starlette, prometheus_client) comes with the serve
extra and is imported only from app, metrics and server.
"""


def serve(checkpoints, **options):
    """Serve the models named by checkpoints until SIGTERM or Ctrl-C (server.serve)."""
    try:
        from .server import serve as run
    except ImportError as e:
        from ..errors import CharrnnError, install_hint

        raise CharrnnError(
            f"serving needs the serve extra ({e.name} is missing): {install_hint('serve')}"
        ) from None
    return run(checkpoints, **options)
