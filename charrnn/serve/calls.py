"""One completion request's life: its rows submitted to the batchers, the characters they write
gathered back on the event loop, and the answer, whole or as server-sent events (EventStream),
with OpenAI's logprobs, usage and finish reasons. The batcher's thread hands results over
through a Mailbox that wakes the loop at most once until it has run."""

import asyncio
import itertools
import json
import threading
import time
import uuid
import weakref

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse

from ..completion import check_stop, prepare_prime
from ..errors import CharrnnError
from .batcher import Busy
from .jobs import Job, top_dict
from .schemas import ApiError

# completion ids: this process's random prefix and a count. uuid4 per request read os.urandom,
# which gives the GIL up, and getting it back from a busy batcher thread cost the event loop
# up to a switch interval per request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNT = itertools.count()


class Mailbox:
    """Items from the batcher threads into the queues of one event loop, with at most one
    wake-up of the loop waiting. The wake-up (call_soon_threadsafe writes to the loop's
    socket, a system call that gives the GIL up) is made by a courier thread of the mailbox's
    own: the batcher's writer, which made it itself, waited a third of its time to get the GIL
    back from the loop it had just woken."""

    def __init__(self, loop):
        self.loop, self.lock = loop, threading.Lock()
        self.items, self.woken, self.ring = [], False, False
        self.bell = threading.Condition(self.lock)
        threading.Thread(target=self._courier, name="charrnn-courier", daemon=True).start()

    def post(self, queue, item):
        with self.lock:
            self.items.append((queue, item))
            if not self.woken:
                self.woken = self.ring = True
                self.bell.notify()

    def _courier(self):
        while True:
            with self.lock:
                while not self.ring:
                    if not self.bell.wait(1.0) and self.loop.is_closed():
                        return
                self.ring = False
            try:
                self.loop.call_soon_threadsafe(self._flush)
            except RuntimeError:  # the loop has closed: nobody is left to read these
                return

    def _flush(self):
        with self.lock:
            items, self.items, self.woken = self.items, [], False
        for queue, item in items:
            queue.put_nowait(item)


_MAILBOXES = weakref.WeakKeyDictionary()


def mailbox():
    """The running loop's Mailbox."""
    loop = asyncio.get_running_loop()
    box = _MAILBOXES.get(loop)
    if box is None:
        box = _MAILBOXES[loop] = Mailbox(loop)
    return box


class Call:
    """One completion request: its prompts read, its jobs submitted, their text gathered."""

    def __init__(self, req, served, settings):
        self.req, self.served, self.model = req, served, served.model
        self.id = f"cmpl-{_ID_PREFIX}{next(_ID_COUNT) & 0xFFFFFFFFFFFF:012x}"
        self.created = int(time.time())
        unknown = "drop" if settings.drop_unknown else "error"
        try:
            self.primes = [prepare_prime(self.model, p, unknown) for p in req.prompts]
        except CharrnnError as e:
            msg = (
                str(e)
                .replace("the prime", "the prompt")
                .replace("pass --drop-unknown", "a server started with --drop-unknown would leave")
            )
            raise ApiError(
                400, msg.replace("would leave to leave", "would leave"), "prompt", "unknown_characters"
            ) from None
        try:
            self.stops = tuple(check_stop(self.model, s) for s in req.stop)
        except CharrnnError as e:
            raise ApiError(400, str(e).replace("--stop", "stop"), "stop") from None
        self.score = req.echo and req.logprobs is not None
        self.gone = False
        self.queue = asyncio.Queue()
        self.mailbox = mailbox()
        self.jobs = []
        # for the access line and /metrics: characters generated, and when they came
        self.generated, self.began = 0, time.monotonic()
        self.first = self.last = None

    chunk_object = "text_completion"  # a stream's events' "object"

    def _heard(self, events):
        """Note when text arrived (the first and the latest characters)."""
        if any(e[1] for e in events):
            self.last = time.monotonic()
            if self.first is None:
                self.first = self.last

    def submit(self):
        r = self.req
        for i, p in enumerate(self.primes):
            job = Job(
                p.ids,
                r.n,
                r.max_tokens,
                self._deliver(i),
                sample=r.sample,
                stops=self.stops,
                logprobs=r.logprobs,
                score=self.score,
            )
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
            self.mailbox.post(self.queue, (i, events))

        return deliver

    def cancel(self):
        for j in self.jobs:
            j.cancel()

    def hang_up(self):
        """The client has gone: the jobs leave the batch, and what waits for them ends."""
        self.gone = True
        self.cancel()
        self.queue.put_nowait(None)

    def watch(self, receive):
        """A task that hangs up when receive says the client has gone."""
        task = asyncio.ensure_future(_disconnected(receive))
        task.add_done_callback(lambda t: t.cancelled() or self.hang_up())
        return task

    def index(self, i, k):
        return i * self.req.n + k

    def echo(self, i):
        """The text echoed for prompt i ("" without echo)."""
        if not self.req.echo:
            return ""
        t = self.primes[i].text
        return t.decode("utf-8", "replace") if isinstance(t, bytes) else t

    def prompt_logprobs(self, i):
        """Prompt i's logprobs lists, as OpenAI's echo gives them: each character scored
        given those before it, the first null (the job's scores, complete by now)."""
        p, job, model = self.primes[i], self.jobs[i], self.model
        if not len(p.text):
            return {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        symbol = None if model.byte_level else model.vocab.symbols
        if symbol is None:
            dec = model.vocab.text_decoder()
            tokens = [dec(p.ids[a : a + 1]) for a in range(len(p.ids))]
        else:
            tokens = [symbol[x] for x in p.ids.tolist()]
        lps, tops = [None], [None]
        for tok, ids, vals in job.scores:
            lps += tok.tolist()
            tops += [top_dict(ids[a], vals[a], symbol) for a in range(len(tok))]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def usage(self, generated):
        p = sum(len(pr.text) for pr in self.primes)
        return {"prompt_tokens": p, "completion_tokens": generated, "total_tokens": p + generated}

    async def _gather(self):
        """(prompt i, events) as the batcher delivers them, until every row has finished."""
        left = len(self.primes) * self.req.n
        while left:
            got = await self.queue.get()
            if got is None:  # hung up
                return
            left -= sum(1 for e in got[1] if e[2] is not None)
            self._heard(got[1])
            yield got

    async def _merged(self):
        """Lists of (choice index, text, finish_reason, logprob entries, ids drawn): each
        choice's part of everything the batcher has delivered by now, in one item, so that a
        stream that falls behind catches up in fewer, larger events."""
        left = len(self.primes) * self.req.n
        while left:
            got = [await self.queue.get()]
            while not self.queue.empty():
                got.append(self.queue.get_nowait())
            if None in got:  # hung up
                return
            merged = {}
            for i, events in got:
                self._heard(events)
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
        watch = self.watch(request.receive)
        try:
            async for i, events in self._gather():
                for k, text, why, entries, count in events:
                    j = self.index(i, k)
                    texts[j] = texts.get(j, "") + text
                    lps.setdefault(j, []).extend(entries or [])
                    if why is not None:
                        finish[j], counts[j] = why, count
        finally:
            watch.cancel()
            self.cancel()
        self.generated = sum(counts.values())
        choices = []
        for i in range(len(self.primes)):
            for k in range(n):
                j = self.index(i, k)
                echo = self.echo(i)
                choices.append(
                    {
                        "text": echo + texts.get(j, ""),
                        "index": j,
                        "logprobs": self._logprobs(lps.get(j, []), i),
                        "finish_reason": finish.get(j, "length"),
                    }
                )
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.served.name,
            "choices": choices,
            "usage": self.usage(self.generated),
        }

    def _logprobs(self, entries, i, lead=True):
        """The logprobs of a choice of prompt i: its generated entries, after the prompt's
        when echoed (lead=False: a stream's later chunk, whose offsets still count the echo)."""
        if self.req.logprobs is None:
            return None
        echo = self.echo(i)
        out = (
            self.prompt_logprobs(i)
            if self.score and lead
            else {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        )
        out["tokens"] += [e[1] for e in entries]
        out["token_logprobs"] += [e[2] for e in entries]
        out["top_logprobs"] += [e[3] for e in entries]
        out["text_offset"] += [len(echo) + e[0] for e in entries]
        return out

    def _chunk(self, j, text, why=None, logprobs=None):
        """One event: the JSON of a completion chunk, its constant part written once (a
        stream sends an event per choice and step)."""
        if not hasattr(self, "_head"):
            self._head = (
                "data: "
                + json.dumps(
                    {
                        "id": self.id,
                        "object": self.chunk_object,
                        "created": self.created,
                        "model": self.served.name,
                    }
                )[:-1]
                + ', "choices": [{"text": '
            )
        return (
            f'{self._head}{json.dumps(text)}, "index": {j}, "logprobs": '
            f'{json.dumps(logprobs)}, "finish_reason": {json.dumps(why)}}}]}}\n\n'
        )

    async def events(self):
        """The server-sent events of a stream; a dropped connection cancels the jobs."""
        generated, echoed = 0, set()
        try:
            if self.req.echo and not self.score:  # at once; scored, with the first event
                for i in range(len(self.primes)):
                    for k in range(self.req.n):
                        yield self._chunk(self.index(i, k), self.echo(i))
            async for events in self._merged():
                out = []
                for j, text, why, entries, count in events:
                    i = j // self.req.n
                    if self.score and j not in echoed:
                        echoed.add(j)
                        out.append(self._chunk(j, self.echo(i), None, self.prompt_logprobs(i)))
                    lp = None
                    if self.req.logprobs is not None:
                        lp = self._logprobs(entries or [], i, lead=False)
                    out.append(self._chunk(j, text, why, lp))
                    if why is not None:
                        generated += count
                yield "".join(out)
            if self.gone:
                return
            if self.req.include_usage:
                yield self._usage_chunk(generated)
            yield "data: [DONE]\n\n"
        finally:
            self.generated = generated
            self.cancel()

    def _usage_chunk(self, generated):
        """The last event before [DONE] with stream_options.include_usage."""
        head = {"id": self.id, "object": self.chunk_object, "created": self.created}
        body = dict(head, model=self.served.name, choices=[], usage=self.usage(generated))
        return "data: " + json.dumps(body) + "\n\n"


class EventStream(StreamingResponse):
    """A Call's server-sent events. Starlette's StreamingResponse, but hearing a disconnect
    through one plain task (Call.watch): under ASGI 2.3, which uvicorn speaks, Starlette's
    opens an anyio task group per response for it, a good part of a stream's set-up."""

    def __init__(self, call):
        super().__init__(call.events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.call = call

    async def __call__(self, scope, receive, send):
        watch = self.call.watch(receive)
        try:
            await self.stream_response(send)
        except OSError:
            raise ClientDisconnect() from None
        finally:
            watch.cancel()


async def _disconnected(receive):
    """Returns when the client has gone."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
