"""`charrnn serve --workers 2` as a real process: both workers answer /health (each names its
pid), completions give the model's text whichever worker takes them, and SIGTERM to the
supervisor exits 0 with no worker left."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from serve_util import free_port, save_run, tiny_model  # noqa: E402

# fmt: off
START_SECONDS = 60     # no answer at all by then: the machine is too loaded, skip
SECOND_SECONDS = 120   # then the other worker must answer within this
# fmt: on


def gone(pid):
    """The process has exited (absent, or a zombie not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def health_pids(url, tries=4):
    """The pids answering /health to a few requests at once, each on its own connection
    (so that either worker may accept it)."""

    def one(_):
        try:
            r = httpx.get(url + "/health", timeout=5)
            return r.json()["pid"] if r.status_code == 200 else None
        except (httpx.TransportError, ValueError):
            return None

    with ThreadPoolExecutor(tries) as pool:
        return {p for p in pool.map(one, range(tries)) if p is not None}


def wait_for_two_workers(p, url, log):
    start, pids, first = time.monotonic(), set(), None
    while len(pids) < 2:
        if p.poll() is not None:
            pytest.fail(f"charrnn serve exited {p.returncode}: {log.read_text()[-2000:]}")
        pids |= health_pids(url)
        now = time.monotonic()
        if pids and first is None:
            first = now
        if first is None and now - start > START_SECONDS:
            pytest.skip(
                f"charrnn serve --workers 2 did not answer /health within "
                f"{START_SECONDS} s (a loaded machine?)"
            )
        assert first is None or now - first < SECOND_SECONDS, (
            f"only worker {pids} answered /health in {SECOND_SECONDS} s"
        )
        time.sleep(0.1)
    return pids


def test_two_workers_answer_and_sigterm_leaves_none(tmp_path):
    model = tiny_model(4)
    run = tmp_path / "duo"
    save_run(run, model)
    port, log = free_port(), tmp_path / "stderr.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CHARRNN_API_KEY", None)
    with open(log, "w") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "serve", "-c", str(run), "--port", str(port), "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    pids = set()
    try:
        pids = wait_for_two_workers(p, url, log)
        assert p.pid not in pids
        want = model.complete("ab c", length=40, temp=0)[0].text
        body = {"model": "duo", "prompt": "ab c", "max_tokens": 40, "temperature": 0}

        def complete(_):
            r = httpx.post(url + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["text"]

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(complete, range(8))) == [want] * 8
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
        deadline = time.monotonic() + 10
        while not all(gone(w) for w in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [w for w in pids if not gone(w)] == []
        assert p.stdout.read() == ""
        assert "Traceback" not in log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for w in pids:
            if not gone(w):
                os.kill(w, signal.SIGKILL)
