"""`charrnn export --format html`: the page, loaded from a file in headless Chromium with the
network off, writes at temperature 0 the text `charrnn sample --temp 0` writes (fp32 weights:
identical, its logits bit for bit; fp16: identical to charrnn on the fp16-rounded weights, and
a measured loss difference), fetches nothing, and takes a byte-level model too."""

import re

import numpy as np
import pytest


from browser import chromium  # noqa: E402
from charrnn import api  # noqa: E402
from charrnn.export import page as page_mod  # noqa: E402
from export_helpers import (
    VOCAB,
    as_near_exact_as_charrnn,
    exact,
    charrnn_sample,
    cli,
    sampler_logits,
    save,  # noqa: E402
    tiny_model,
)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


class Page:
    """An exported page opened from its file, offline; requests and script errors recorded."""

    def __init__(self, browser, path, bypass_csp=True):
        # bypass_csp: the page's Content-Security-Policy forbids eval, which Playwright's
        # wait_for_function and evaluate use; one test opens it with the policy in force
        self.ctx = browser.new_context(offline=True, bypass_csp=bypass_csp)
        self.page = self.ctx.new_page()
        self.requests, self.errors = [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.resolve().as_uri())

    def wait(self, *states, timeout=120_000):
        self.page.wait_for_selector(
            ",".join(f"body[data-state={s}]" for s in states), timeout=timeout, state="attached"
        )
        return self.page.get_attribute("body", "data-state")

    def write(self, prime, length, temp=0):
        assert self.wait("ready", "done") in ("ready", "done"), self.errors
        self.page.fill("#prime", prime)
        self.page.fill("#temp", str(temp))
        self.page.fill("#length", str(length))
        self.page.click("#write")
        assert self.wait("done", "error") == "done", self.page.text_content("#status")
        return self.page.text_content("#out")

    def close(self):
        assert not self.errors
        assert all(u.startswith("file://") for u in self.requests), self.requests
        self.ctx.close()


def export(model, tmp_path, precision=None, name="w.html"):
    ckpt = save(model, tmp_path / "m.npz")
    out = tmp_path / name
    extra = ["--precision", precision] if precision else []
    done = cli("export", "-c", ckpt, "--format", "html", "-o", out, *extra)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "wrote" in done.stderr
    return ckpt, out


@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 1), ("rnn", 3), ("lnlstm", 2)])
def test_greedy_page_writes_charrnn_samples_text(browser, tmp_path, cell, layers):
    ckpt, html = export(tiny_model(cell, layers, seed=4), tmp_path)
    p = Page(browser, html)
    text = p.write("the cat ", 300)
    p.close()
    assert text == charrnn_sample(ckpt, "the cat ", 300).decode()
    assert len(set(text)) > 5


def page_logits(browser, html, ids):
    """The page's logits (T, V) after each of ids, from the zero state."""
    p = Page(browser, html)
    p.wait("ready")
    got = np.array(
        p.page.evaluate(
            "ids => { const m = charrnnWriter.model; m.reset();"
            " return ids.map(i => { m.step(i); return Array.from(m.next()); }); }",
            ids.tolist(),
        ),
        np.float32,
    )
    p.close()
    return got


@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 3), ("rnn", 1)])
def test_page_logits_are_charrnn_samplers_bit_for_bit(browser, tmp_path, cell, layers):
    m = tiny_model(cell, layers, 40, seed=9)
    _, html = export(m, tmp_path)
    ids = np.random.default_rng(0).integers(0, len(VOCAB), 300)
    assert np.array_equal(page_logits(browser, html, ids), sampler_logits(m, ids))


@pytest.mark.parametrize("layers", [1, 3])
def test_the_lnlstm_pages_logits_are_as_exact_as_charrnn_samplers(browser, tmp_path, layers):
    """The lnlstm's normalisations sum rows, which charrnn's kernels may reassociate (vector
    lanes) and the page sums in order, so not bit for bit: as near float64 as the sampler."""
    m = tiny_model("lnlstm", layers, 40, seed=9)
    _, html = export(m, tmp_path)
    ids = np.random.default_rng(0).integers(0, len(VOCAB), 300)
    got, want = page_logits(browser, html, ids), sampler_logits(m, ids)
    assert np.abs(want).max() > 1.0
    as_near_exact_as_charrnn(got, want, exact(m, ids)[0][:, 0])


def test_tanh_and_sigmoid_are_the_kernels(browser, tmp_path):
    """The page's float32 tanh and sigmoid equal kernels.py's, value by value."""
    from numba import njit
    from charrnn.engine import kernels

    @njit
    def both(x, t, s):
        for i in range(x.shape[0]):
            t[i] = kernels.tanh_(x[i])
            s[i] = kernels.sigmoid_(x[i])

    x = np.concatenate([np.random.default_rng(1).normal(0, 3, 20000), [0, -0.0, 7.9, -8, 20, 1e-8]])
    x = x.astype(np.float32)
    t, s = np.empty_like(x), np.empty_like(x)
    both(x, t, s)
    _, html = export(tiny_model("rnn", 1, 4), tmp_path)
    p = Page(browser, html)
    p.wait("ready")
    jt, js = p.page.evaluate(
        "xs => [xs.map(charrnnWriter.tanh32), xs.map(charrnnWriter.sigmoid32)]", x.tolist()
    )
    p.close()
    assert np.array_equal(np.array(jt, np.float32), t)
    assert np.array_equal(np.array(js, np.float32), s)


def test_the_page_is_self_contained_and_works_under_its_policy(browser, tmp_path):
    _, html = export(tiny_model("gru", 2, 16), tmp_path)
    text = html.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text  # the browser itself refuses anything from elsewhere
    p = Page(browser, html, bypass_csp=False)
    assert p.wait("ready", "error") == "ready"
    p.page.fill("#temp", "0")
    p.page.fill("#length", "50")
    p.page.click("#write")
    assert p.wait("done", "error") == "done"
    assert len(p.page.text_content("#out")) == 50
    p.close()


def test_an_unknown_prime_character_is_refused_on_the_page(browser, tmp_path):
    _, html = export(tiny_model("lstm", 1, 8), tmp_path)
    p = Page(browser, html)
    p.wait("ready")
    p.page.fill("#prime", "the Zebra")
    p.page.click("#write")
    assert "not in the vocabulary: Z" in p.page.text_content("#status")
    assert p.page.get_attribute("body", "data-state") == "ready"
    p.close()


def test_fp16_page(browser, tmp_path, cli_run, corpus_file):
    """fp16 weights: the page writes charrnn's text for the fp16-rounded weights exactly; the
    fp32 model's text agrees for a first stretch; the rounding costs little loss."""
    m = api.load(cli_run)
    ckpt, html = export(m, tmp_path, "fp16")
    half = api.load(ckpt)
    half.flat[:] = page_mod.rounded(m, "fp16")
    half_ckpt = save(half, tmp_path / "half.npz")
    p = Page(browser, html)
    text = p.write("ab", 400)
    p.close()
    assert text == charrnn_sample(half_ckpt, "ab", 400).decode()
    full = charrnn_sample(ckpt, "ab", 400).decode()
    same = next((i for i, (a, b) in enumerate(zip(text, full)) if a != b), len(text))
    assert same >= 20, (same, text, full)
    corpus = corpus_file.read_text()
    d = half.loss(corpus, exact=True) - m.loss(corpus, exact=True)
    assert abs(d) < 2e-3, d  # measured: see docs/export.md


def test_fp16_halves_the_page(tmp_path):
    m = tiny_model("lstm", 2, 64)
    fp32, fp16 = (len(page_mod.render(m, prec)) for prec in ("fp32", "fp16"))
    weights = m.flat.size * 4 * 4 / 3  # base64 of fp32
    assert fp32 > weights and fp16 < fp32 - 0.45 * weights


def test_byte_level_page_decodes_utf8_as_it_streams(browser, tmp_path):
    vocab = bytes(range(256))
    m = tiny_model("lstm", 2, 16, vocab=vocab, seed=6, sharpen=1.0)
    m.params.by[:] = 0
    m.params.by[[0x20, 0x61, 0x65, 0xC3, 0xA9]] = [2, 3, 3, 2.5, 2.5]  # ' ', a, e, 'é'
    ckpt, html = export(m, tmp_path)
    p = Page(browser, html)
    text = p.write("héllo ", 200)
    p.close()
    raw = charrnn_sample(ckpt, "héllo ", 200)
    assert text == raw.decode("utf-8", "replace")


def test_any_symbols_survive_the_page(browser, tmp_path):
    """Symbols that could close the script element, need escaping, or take two UTF-16 units."""
    vocab = "".join(sorted("\n <>/&\"'\\abcde\u00e9\U0001d11e\u2028"))
    m = tiny_model("gru", 2, 16, vocab=vocab, seed=3, sharpen=2.0)
    ckpt, html = export(m, tmp_path)
    p = Page(browser, html)
    text = p.write("a</\U0001d11e", 150)
    p.close()
    assert text == charrnn_sample(ckpt, "a</\U0001d11e", 150).decode()
    assert len(set(text)) > 5
