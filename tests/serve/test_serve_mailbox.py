"""The batcher's deliveries reach each request's queue in order, and wake the event loop once
for everything posted before it runs (serve.calls.Mailbox)."""

import asyncio
import threading

import pytest

pytest.importorskip("starlette")
from charrnn.serve.calls import mailbox  # noqa: E402


def test_posts_arrive_in_order_with_one_wake_up():
    async def main():
        loop = asyncio.get_running_loop()
        box = mailbox()
        assert mailbox() is box
        wakes = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: (wakes.append(a), real(*a))
        queues = [asyncio.Queue(), asyncio.Queue()]

        def batcher():
            for n in range(1000):
                box.post(queues[n % 2], n)

        t = threading.Thread(target=batcher)
        t.start()
        t.join()  # the loop has not run meanwhile: one wake-up for all 1000
        got = [[await q.get() for _ in range(500)] for q in queues]
        assert got == [list(range(0, 1000, 2)), list(range(1, 1000, 2))]
        assert len(wakes) == 1
        box.post(queues[0], "again")  # after a flush, the next post wakes the loop again
        assert await queues[0].get() == "again" and len(wakes) == 2

    asyncio.run(main())
