"""Headless Chromium for the tests of pages (the server's writing page, the exported HTML file).

`chromium()` yields a Playwright browser driving the distribution's Chromium (/usr/bin/chromium,
which .ci/run installs), or skips the test where Playwright or Chromium is absent. The flags keep
Chromium off the network this machine does not have: without them it retries Google's hosts at
every start."""

import contextlib
import os
import shutil

import pytest

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def executable():
    for name in (os.environ.get("CHARRNN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


@contextlib.contextmanager
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    path = executable()
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
