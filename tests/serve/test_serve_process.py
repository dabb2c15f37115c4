"""`charrnn serve` as a real process: the first line says where, SIGTERM and Ctrl-C (SIGINT)
drain a stream in flight and exit 0; and --reload picking up a newer best.npz between
requests, never a torn one, while a training might be writing it."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from serve_util import app_of, free_port, save_run, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve") / "shakes"
    save_run(d, tiny_model(0, hidden=128))
    return d


def start(run_dir, *extra):
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CHARRNN_API_KEY", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", "-c", str(run_dir), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = p.stderr.readline()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert p.poll() is None, p.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return p, url, first


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_the_stream_in_flight_and_exits_0(run_dir, sig):
    p, url, first = start(run_dir)
    try:
        assert first.startswith("charrnn: serving 1 model at " + url + "/")
        body = {"model": "shakes", "prompt": "abc", "max_tokens": 1500, "temperature": 1, "stream": True}
        text, done, signalled = "", False, False
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if not signalled:
                    p.send_signal(sig)  # after the first event: the rest is still to come
                    signalled = True
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    text += json.loads(line[6:])["choices"][0]["text"]
        assert done and len(text) == 1500
        assert p.wait(60) == 0
        out, err = p.communicate()
        assert out == "" and "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()


def test_beyond_loopback_without_a_key_warns(run_dir):
    port = free_port()
    env = dict(os.environ)
    env.pop("CHARRNN_API_KEY", None)
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "serve",
            "-c",
            str(run_dir),
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        first, second = p.stderr.readline(), p.stderr.readline()
        assert f"http://0.0.0.0:{port}/" in first
        assert "warning" in second and "--api-key" in second
    finally:
        p.terminate()
        p.wait(30)


def test_reload_picks_up_a_newer_checkpoint_and_never_a_torn_one(tmp_path, monkeypatch):
    from charrnn.serve import models
    from starlette.testclient import TestClient

    monkeypatch.setattr(models, "RELOAD_EVERY", 0.0)
    a, b = tiny_model(1), tiny_model(2)
    path = save_run(tmp_path / "live", a)
    want = {m.complete("ab", length=30, temp=0)[0].text: name for name, m in (("a", a), ("b", b))}
    app, reg = app_of(str(tmp_path / "live"), reload=True)
    body = {"model": "live", "prompt": "ab", "max_tokens": 30, "temperature": 0}
    with TestClient(app) as c:
        assert want[c.post("/v1/completions", json=body).json()["choices"][0]["text"]] == "a"
        save_run(tmp_path / "live", b)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert want[c.post("/v1/completions", json=body).json()["choices"][0]["text"]] == "b"
        stop = threading.Event()

        def writer():  # a training writing best.npz over and over (atomically)
            k = 0
            while not stop.is_set():
                save_run(tmp_path / "live", (a, b)[k % 2])
                k += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            seen = set()
            for _ in range(30):
                r = c.post("/v1/completions", json=body)
                assert r.status_code == 200, r.text
                seen.add(want[r.json()["choices"][0]["text"]])
        finally:
            stop.set()
            t.join()
    reg.close()
    assert seen <= {"a", "b"}


def test_bad_options_are_usage_errors_and_sample_does_not_import_the_http_stack(run_dir):
    from typer.testing import CliRunner
    from charrnn.cli import app

    r = CliRunner().invoke(app, ["serve", "-c", str(run_dir), "--max-batch", "0"])
    assert r.exit_code == 2 and "--max-batch" in r.stderr
    code = (
        "import sys, charrnn.cli; assert not {'uvicorn', 'starlette'} & set(sys.modules), sorted(sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_seeded_request_is_charrnn_sample(run_dir):
    """The server's text for a seed and options is `charrnn sample`'s for the same ones."""
    from starlette.testclient import TestClient
    from typer.testing import CliRunner
    from charrnn.cli import app as cli

    args = [
        "--seed",
        "3",
        "--temp",
        "0.8",
        "--top-p",
        "0.9",
        "--presence-penalty",
        "0.3",
        "-n",
        "120",
        "--prime",
        "abc d",
    ]
    r = CliRunner().invoke(cli, ["sample", "-c", str(run_dir), *args])
    assert r.exit_code == 0, r.stderr
    app, reg = app_of(str(run_dir))
    with TestClient(app) as c:
        got = c.post(
            "/v1/completions",
            json={
                "prompt": "abc d",
                "seed": 3,
                "temperature": 0.8,
                "top_p": 0.9,
                "presence_penalty": 0.3,
                "max_tokens": 120,
                "echo": True,
            },
        ).json()
    reg.close()
    assert got["choices"][0]["text"] == r.stdout


@pytest.mark.parametrize("quiet", [False, True])
def test_the_log_says_what_is_loaded_and_one_line_a_request(run_dir, quiet):
    p, url, _ = start(run_dir, *(["--quiet"] if quiet else []))
    try:
        body = {"model": "shakes", "prompt": "abc", "max_tokens": 5}
        assert httpx.post(url + "/v1/completions", json=body).status_code == 200
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
        err = p.stderr.read()
        assert f"charrnn: shakes: {run_dir / 'best.npz'} (no validation loss)\n" in err
        access = [ln for ln in err.splitlines() if ln.startswith("charrnn: POST ")]
        if quiet:
            assert access == []
        else:
            assert len(access) == 1 and access[0].startswith("charrnn: POST /v1/completions 200 5 chars ")
        assert '"POST /v1/completions HTTP/1.1" 200' not in err  # uvicorn's own line: ours replaces it
    finally:
        if p.poll() is None:
            p.kill()
