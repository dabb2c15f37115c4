"""What the server tells its operator: /metrics read by Prometheus's own parser (requests by
route and status, characters, the batchers' rows and cache, the latency histograms), one
access line per request (none with access_log off), and a reload saying what it loaded and
the validation loss it replaced."""

import logging
import os
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
parser = pytest.importorskip("prometheus_client.parser")
from starlette.testclient import TestClient  # noqa: E402

from serve_util import app_of, tiny_model  # noqa: E402


def samples(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in parser.text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_characters_and_times(caplog):
    app, reg = app_of(("tiny", tiny_model(0)))
    with caplog.at_level(logging.INFO, logger="charrnn.access"), TestClient(app) as c:
        for _ in range(2):
            assert c.post("/v1/completions", json={"prompt": "abc", "max_tokens": 30}).status_code == 200
        chat = {"messages": [{"role": "user", "content": "abc"}], "max_tokens": 20, "n": 2, "stream": True}
        with c.stream("POST", "/v1/chat/completions", json=chat) as r:
            assert r.status_code == 200 and list(r.iter_lines())[-2] == "data: [DONE]"
        assert c.get("/v1/nothing/here").status_code == 404
        assert c.post("/v1/completions", json={"prompt": "abc", "n": 0}).status_code == 400
        got = samples(c)
    reg.close()
    model = (("model", "tiny"),)

    def requests(route, status):
        return got[("charrnn_requests_total", (("route", route), ("status", status)))]

    assert requests("/v1/completions", "200") == 2 and requests("/v1/completions", "400") == 1
    assert requests("/v1/chat/completions", "200") == 1 and requests("other", "404") == 1
    assert got[("charrnn_generated_characters_total", model)] == 2 * 30 + 2 * 20
    assert got[("charrnn_prompt_characters_total", model)] == 3 * 3
    assert got[("charrnn_prefix_cache_hits_total", model)] >= 1  # "abc" again: from the cache
    assert got[("charrnn_prompt_characters_cached_total", model)] >= 2
    assert got[("charrnn_rows_writing", model)] == 0 and got[("charrnn_rows_waiting", model)] == 0
    assert got[("charrnn_time_to_first_character_seconds_count", model)] == 3
    assert got[("charrnn_time_per_character_seconds_count", model)] == 3
    assert got[("charrnn_requests_in_flight", ())] == 1  # this scrape
    lines = [r.getMessage() for r in caplog.records if r.name == "charrnn.access"]
    assert len(lines) == 6 and lines[-1].startswith("charrnn: GET /metrics 200 ")
    assert lines[0].startswith("charrnn: POST /v1/completions 200 30 chars ") and lines[0].endswith(" s")
    assert lines[2].startswith("charrnn: POST /v1/chat/completions 200 40 chars ")
    assert lines[3].startswith("charrnn: GET /v1/nothing/here 404 ")


def test_no_access_lines_when_quiet(caplog):
    app, reg = app_of(("tiny", tiny_model(0)), access_log=False)
    with caplog.at_level(logging.INFO, logger="charrnn.access"), TestClient(app) as c:
        assert c.post("/v1/completions", json={"prompt": "abc", "max_tokens": 3}).status_code == 200
    reg.close()
    assert not [r for r in caplog.records if r.name == "charrnn.access"]


def test_a_reload_says_what_it_loaded_and_what_it_replaced(tmp_path, monkeypatch, caplog):
    from charrnn import checkpoint
    from charrnn.serve import models

    def save(m, loss):
        meta = {"model": m.config.to_dict(), "vocab": m.vocab.to_json(), "val_loss": loss}
        (tmp_path / "live").mkdir(exist_ok=True)
        return checkpoint.save(tmp_path / "live" / "best.npz", meta, m.params)

    monkeypatch.setattr(models, "RELOAD_EVERY", 0.0)
    path = save(tiny_model(1), 1.551)
    app, reg = app_of(str(tmp_path / "live"), reload=True)
    assert reg.get("live").loaded() == f"{path} (validation loss 1.5510)"
    body = {"model": "live", "prompt": "ab", "max_tokens": 3}
    with caplog.at_level(logging.INFO, logger="charrnn.serve"), TestClient(app) as c:
        save(tiny_model(2), 1.8687)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert c.post("/v1/completions", json=body).status_code == 200
    reg.close()
    (line,) = [r.getMessage() for r in caplog.records if "reloaded" in r.getMessage()]
    assert line == (
        f"charrnn: live reloaded from {path} (validation loss 1.8687; it replaced validation loss 1.5510)"
    )
