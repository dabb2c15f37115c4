"""charrnn serve: the models over OpenAI's completions API, and the writing page (all of it in
charrnn/serve; the HTTP stack is imported only when the command runs)."""

import sys
from pathlib import Path
from typing import Annotated, Optional

from .common import Opt, user_errors


@user_errors
def serve(
    checkpoint: Annotated[
        Optional[list[Path]],
        Opt(
            "--checkpoint",
            "-c",
            help="A model to serve (repeat for several): a checkpoint, a run "
            "directory or a run's name. Default: the latest run.",
        ),
    ] = None,
    host: Annotated[str, Opt(help="Address to bind; beyond loopback, set an API key.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port.")] = 8000,
    max_batch: Annotated[int, Opt(help="Rows written at once per model (more wait).")] = 64,
    max_queue: Annotated[int, Opt(help="Rows that may wait; beyond, 429.")] = 256,
    max_tokens: Annotated[int, Opt(help="The largest max_tokens a request may ask.")] = 4096,
    default_max_tokens: Annotated[
        int, Opt(help="Characters written when a request gives no max_tokens (at most --max-tokens).")
    ] = 256,
    api_key: Annotated[
        Optional[str],
        Opt(envvar="CHARRNN_API_KEY", show_default=False, help="Require Authorization: Bearer KEY on /v1/."),
    ] = None,
    drop_unknown: Annotated[
        bool, Opt(help="Drop prompt characters a model does not know instead of answering 400.")
    ] = False,
    reload: Annotated[bool, Opt(help="Pick up a newer checkpoint between requests.")] = False,
    workers: Annotated[int, Opt(help="Server processes (each loads the models).")] = 1,
    quiet: Annotated[bool, Opt(help="No access line per request on stderr.")] = False,
    chat_template: Annotated[
        Optional[list[str]],
        Opt(
            help="How /v1/chat/completions writes messages as text: plain (the contents as they "
            "are), play (NAME: before each), or a JSON file; ID=TEMPLATE for one model. Default: plain.",
            show_default=False,
        ),
    ] = None,
):
    """Serve models over OpenAI's completions and chat API, with a page to write with them at /."""
    from ..config import check_int

    for flag, v, low in (
        ("--port", port, 0),
        ("--max-batch", max_batch, 1),
        ("--max-queue", max_queue, 0),
        ("--max-tokens", max_tokens, 1),
        ("--default-max-tokens", default_max_tokens, 1),
        ("--workers", workers, 1),
    ):
        check_int(flag, v, low)
    from .. import serve as service  # the HTTP stack is imported only here

    service.serve(
        checkpoint or [None],
        host=host,
        port=port,
        max_batch=max_batch,
        max_queue=max_queue,
        max_tokens=max_tokens,
        default_max_tokens=default_max_tokens,
        api_key=api_key,
        drop_unknown=drop_unknown,
        reload=reload,
        workers=workers,
        chat_templates=chat_template or [],
        quiet=quiet,
        report=lambda line: (sys.stderr.write(line + "\n"), sys.stderr.flush()),
    )
