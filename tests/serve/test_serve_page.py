"""The writing page in headless Chromium against a live server: it loads with no other host,
a typed text gets the model's continuation in grey after it, Tab accepts it, typing on
replaces it, Esc dismisses it; and a screenshot."""

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from browser import chromium  # noqa: E402
from serve_util import app_of, live, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


@pytest.fixture(scope="module")
def url(model):
    app, reg = app_of(("tiny", model), ("other", tiny_model(1, hidden=8)))
    with live(app) as u:
        yield u
    reg.close()


def ghost(page):
    return page.eval_on_selector("#ghost", "e => e.textContent")


def test_the_page_suggests_and_tab_accepts(url, model, tmp_path):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        foreign = []
        page.on("request", lambda r: None if r.url.startswith(url) else foreign.append(r.url))
        page.goto(url + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length == 2")
        assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["tiny", "other"]
        page.eval_on_selector("#temperature", "e => { e.value = 0; e.dispatchEvent(new Event('input')); }")
        page.fill("#length", "40")
        page.click("#editor")
        page.keyboard.type("abc def", delay=20)
        page.wait_for_function("document.getElementById('ghost').textContent.length == 40", timeout=15000)
        want = model.complete("abc def", length=40, temp=0)[0].text
        assert ghost(page) == want
        page.screenshot(path=str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 5000
        page.keyboard.press("Tab")
        assert page.input_value("#editor") == "abc def" + want
        page.wait_for_function(
            "document.getElementById('ghost').textContent.length == 40", timeout=15000
        )  # a new suggestion after the accepted one
        page.keyboard.type("k")
        assert ghost(page) == ""  # typing on replaces it ...
        page.wait_for_function("document.getElementById('ghost').textContent.length == 40", timeout=15000)
        assert ghost(page) == model.complete("abc def" + want + "k", length=40, temp=0)[0].text
        page.keyboard.press("Escape")
        assert ghost(page) == ""  # ... and Esc dismisses it
        page.wait_for_timeout(600)
        assert ghost(page) == ""
        page.select_option("#model", "other")
        page.keyboard.type("a")
        page.wait_for_function("document.getElementById('ghost').textContent.length == 40", timeout=15000)
        assert foreign == []
