"""charrnn inspect and model.states: the recorded states against the sampler's step kernel, a
unit planted by hand found by --find, the features, the HTML page, and the command's errors."""

import html.parser
import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn import checkpoint
from charrnn.inspect import probe, features as probe_features, view as probe_view
from charrnn.engine import sample_kernels
from charrnn.api import CharModel, load
from charrnn.cli import app
from charrnn.errors import CharrnnError
from charrnn.engine.model import ModelConfig
from conftest import error_line

CELLS = ["lstm", "gru", "rnn", "lnlstm"]
VOCAB = "\n \"'()<>&=abc"


def random_model(cell, L=2, H=5, seed=0, dtype=np.float64):
    cfg = ModelConfig(cell=cell, layers=L, hidden=H, vocab_size=len(VOCAB))
    m = CharModel(cfg, VOCAB, dtype=dtype)
    m.flat[:] = np.random.default_rng(seed).uniform(-0.8, 0.8, m.flat.size)
    return m


def random_text(n, seed=1, alphabet=VOCAB):
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(alphabet), n))


# ------------------------------------------------------------------------ states vs step kernel


@pytest.mark.parametrize("cell", CELLS)
def test_states_equal_the_sampler_step_kernel(cell):
    """Windows of the forward kernel with the state carried (window 5 over 23 characters) give
    what the sampler's one-character kernel gives, fed the same text from the zero state: h, c
    and every layer's gates (a stack cut to l+1 layers leaves layer l's gates in G)."""
    from charrnn.engine import sampler

    m = random_model(cell, L=3)
    text = random_text(23)
    s = probe.states(m, text, window=5)
    L, N, H = s.h.shape
    assert (L, N, H) == (3, 23, 5)
    assert (s.c is None) == (cell not in ("lstm", "lnlstm"))
    assert list(s.gates) == list(probe.GATE_NAMES[m.cell])
    ids = m.encode(text).astype(np.int64)
    for top in range(L):  # run layers 0..top, compare layer top's gates (and all states)
        h, c = np.zeros((top + 1, 1, H)), np.zeros((top + 1, 1, H))
        sm = sampler.Sampler(m, 1)  # the step kernel's buffers and packed weights
        G = sm.work.G
        for t in range(N):
            sample_kernels.step(m.cell, m.params, sm.work, ids[t : t + 1], h, c)
            np.testing.assert_allclose(s.h[: top + 1, t], h[:, 0], rtol=0, atol=1e-12)
            if s.c is not None:
                np.testing.assert_allclose(s.c[: top + 1, t], c[:, 0], rtol=0, atol=1e-12)
            for k, name in enumerate(probe.GATE_NAMES[m.cell]):
                np.testing.assert_allclose(
                    s.gates[name][top, t], G[0, k * H : (k + 1) * H], rtol=0, atol=1e-12
                )
        if cell == "rnn":  # the rnn's only activation is its state
            assert s.gates == {}


def test_model_states_is_the_api_entry_point():
    m = random_model("gru")
    s = m.states("ab(c)")
    assert s.h.shape == (2, 5, 5) and set(s.gates) == {"r", "z", "n"}
    assert s.ids.tolist() == m.encode("ab(c)").tolist()
    with pytest.raises(probe.CorpusError, match="not in the vocabulary.*--drop-unknown"):
        m.states("xyz")
    assert m.states("axb", unknown="drop").h.shape[1] == 2
    with pytest.raises(probe.CorpusError, match="empty once unknown"):
        m.states("xyz", unknown="drop")
    with pytest.raises(probe.CorpusError, match="empty"):
        m.states("")


@pytest.mark.parametrize("cell", CELLS)
def test_streamed_correlation_and_saturation_equal_direct_ones(cell):
    """Correlate and Saturate, accumulated window by window, against NumPy on the full arrays."""
    m = random_model(cell, H=6, seed=3)
    text = random_text(200, seed=4)
    s = probe.states(m, text)
    ids = probe.encode(m, text)
    f = np.random.default_rng(5).random(200)
    (cor,) = probe.run(m, ids, probe.Correlate(m, f), window=17)
    r = cor.result()
    assert set(r) == ({"h", "c"} if cell in ("lstm", "lnlstm") else {"h"})
    for kind in r:
        X = probe.select(s, kind)
        for l in range(2):
            for j in range(6):
                want = np.corrcoef(X[l, :, j], f)[0, 1]
                assert abs(r[kind][l, j] - want) < 1e-10
    if cell == "rnn":
        with pytest.raises(probe.ConfigError, match="no gates"):
            probe.Saturate(m)
        return
    (sat,) = probe.run(m, ids, probe.Saturate(m), window=17)
    for g, (left, right) in sat.fractions().items():
        np.testing.assert_array_equal(left, (s.gates[g] < 0.1).mean(axis=1))
        np.testing.assert_array_equal(right, (s.gates[g] > 0.9).mean(axis=1))
    rows = sat.summary()
    assert len(rows) == 2 * len(probe.SIGMOID_GATES[m.cell])


# --------------------------------------------------------------------------------- planted unit

BIG, A = 20.0, 40.0


def planted_lstm():
    """A 2 x 6 LSTM whose layer-0 unit 0 flips on '"': its cell state is 1 inside double
    quotes and 0 outside. On the quote the forget gate closes and the input gate opens only if
    the unit's own h was low (outside); other characters hold the cell. Its h reaches no other
    unit, so nothing else can copy the indicator."""
    m = random_model("lstm", L=2, H=6, seed=7)
    p, H, q = m.params, 6, VOCAB.index('"')
    i, f, g, o = 0, H, 2 * H, 3 * H
    p.Wh[0, 0, :] = 0  # unit 0's h feeds nothing in its layer ...
    p.Wx[0, 0, :] = 0  # ... nor the layer above
    for col in (i, f, g, o):
        p.Wh[0, :, col] = 0
        p.b[0, col] = 0
    p.Wx0[:, i] = -BIG
    p.Wx0[q, i] = A * 0.38  # open when h = 0, shut when h = tanh(1) = 0.76
    p.Wh[0, 0, i] = -A
    p.Wx0[:, f] = BIG
    p.Wx0[q, f] = -BIG
    p.Wx0[:, g] = BIG
    p.Wx0[:, o] = BIG
    return m


def quoted_text(lines=60, seed=2):
    """Lines of a b c = ( ) and spaces, some holding a "quoted" part, balanced on each line."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(lines):
        parts = ["".join(rng.choice(list("abc=() "), rng.integers(1, 12))) for _ in range(rng.integers(1, 4))]
        out.append('"'.join(parts) + ('"' if len(parts) % 2 == 0 else ""))
    return "\n".join(out) + "\n"


def test_a_planted_string_unit_is_found_first():
    m = planted_lstm()
    text = quoted_text()
    inside = probe.feature("string", text)
    assert 0.2 < inside.mean() < 0.8
    s = probe.states(m, text)
    np.testing.assert_allclose(s.c[0, :, 0], inside, atol=1e-6)  # the plant works
    ids = probe.encode(m, text)
    (cor,) = probe.run(m, ids, probe.Correlate(m, inside))
    found = probe.rank(cor.result(), top=3)
    assert {(u["layer"], u["unit"]) for u in found[:2]} == {(0, 0)}
    assert {u["state"] for u in found[:2]} == {"h", "c"}
    assert all(u["r"] > 0.999 for u in found[:2])
    assert abs(found[2]["r"]) < 0.9


@pytest.fixture(scope="module")
def planted_ckpt(tmp_path_factory):
    m = planted_lstm()
    path = tmp_path_factory.mktemp("planted") / "planted.npz"
    meta = {"model": m.config.to_dict(), "vocab": m.vocab.to_json()}
    checkpoint.save(path, meta, m.params)
    return path


def invoke(*args, input=None):
    return CliRunner().invoke(app, ["inspect", *[str(a) for a in args]], input=input)


def test_cli_find_string_ranks_the_planted_unit_first(planted_ckpt):
    r = invoke("-", "-c", planted_ckpt, "--find", "string", "--json", "--top", "3", input=quoted_text())
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    top = out["find"]["units"][0]
    assert (top["layer"], top["unit"]) == (0, 0) and top["r"] > 0.999  # float32 weights
    assert len(out["find"]["units"]) == 3
    r = invoke("-", "-c", planted_ckpt, "--regex", '"[^"\n]*"', "--gates", input=quoted_text())
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["rank", "unit", "state", "r"]
    assert lines[1].split()[1] == "0:0" and float(lines[1].split()[3]) > 0.8  # closing quotes
    assert any(ln.split()[:2] == ["1", "f"] for ln in lines)  # the gate table, layer 1 forget


# ------------------------------------------------------------------------------------- features


def test_python_string_lexer():
    text = "x = \"a#b\" # it's \"no\"\ny = '''q\n\"''' + r'\\'' + \"e\\\"f\"\n\"open\nz"
    inside, code = probe_features.python_strings(text)
    got = "".join("S" if s else ("." if c else "#") for s, c in zip(inside, code))
    want_parts = [
        ("x = ", "...."),
        ('"a#b"', "SSSS#"),
        (" ", "."),
        ('# it\'s "no"', "#" * 11),
        ("\n", "."),
        ("y = ", "...."),
        ("'''q\n\"", "SSSSSS"),
        ("'''", "###"),
        (" + r", "...."),
        ("'\\''", "SSS#"),
        (" + ", "..."),
        ('"e\\"f"', "SSSSS#"),
        ("\n", "."),
        ('"open', "SSSSS"),
        ("\n", "."),
        ("z", "."),
    ]
    assert "".join(t for t, _ in want_parts) == text
    assert got == "".join(w for _, w in want_parts)
    np.testing.assert_array_equal(probe.feature("comment", text), [ch == "#" for ch in got])


def test_bracket_line_and_indent_features():
    text = "f(a[1],\n    '(' {2})\n  x)"
    np.testing.assert_array_equal(
        probe.feature("python-brackets", text),
        [0, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0],
    )
    np.testing.assert_array_equal(  # every bracket, the quoted one too
        probe.feature("brackets", text),
        [0, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 2, 1, 1, 1, 1, 1, 0],
    )
    np.testing.assert_array_equal(probe_features.line_position("ab\nc\n\nde"), [1, 2, 0, 1, 0, 0, 1, 2])
    np.testing.assert_array_equal(probe_features.indent("  a b\n x\n\n"), [1, 2, 2, 2, 2, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(
        probe_features.quotes('a "b\nc" \u201cd\u201d'), [0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0]
    )
    np.testing.assert_array_equal(probe.feature("re:b+", "abbcb"), [0, 1, 1, 0, 1])
    with pytest.raises(probe.ConfigError, match="unknown feature"):
        probe.feature("colour", "abc")
    with pytest.raises(probe.ConfigError, match="bad regular expression"):
        probe.check_feature("re:(")


# ----------------------------------------------------------------------------------------- HTML


class SpanCounter(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth, self.spans, self.text, self.titles = 0, 0, [], []

    def handle_starttag(self, tag, attrs):
        if tag == "span":
            self.depth += 1
            self.spans += 1
            self.text.append("")
            self.titles.append(dict(attrs)["title"])

    def handle_endtag(self, tag):
        if tag == "span":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.text[-1] += data


def test_html_has_one_span_per_character_and_escapes(planted_ckpt, tmp_path):
    text = "a<b && c>'a' =\n  \"b\"\n(&)\n"
    page = tmp_path / "unit.html"
    r = invoke("-", "-c", planted_ckpt, "--unit", "0:0", "--state", "c", "--html", page, input=text)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    doc = page.read_text(encoding="utf-8")
    assert doc.count("<span") == len(text)
    parsed = SpanCounter()
    parsed.feed(doc)
    assert parsed.spans == len(text)
    assert parsed.text == list(text)  # every character back, newlines included
    for esc in ("&lt;", "&gt;", "&amp;", "&quot;", "&#x27;"):
        assert esc in doc
    assert "a<b" not in doc and "'a'" not in doc and '>"<' not in doc and ">&<" not in doc
    values = [float(t) for t in parsed.titles]
    assert values[text.index('"b"') + 1] == pytest.approx(1.0, abs=1e-3)  # the planted cell
    assert values[text.index("a<b") + 2] == pytest.approx(0.0, abs=1e-3)


def test_colour_scale_is_diverging_blue_red():
    cols = probe_view.colours([-1.0, 0.0, 1.0, 0.5], "h")
    assert [c for c, _ in cols] == ["#b2182b", "#f7f7f7", "#2166ac", "#8caed2"]
    assert [d for _, d in cols] == [True, False, True, False]
    assert probe_view.colours([0.0, 1.0], "f")[0][0] == "#b2182b"  # gate 0 is -1


def test_saturation_png_needs_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(CharrnnError, match="needs matplotlib"):
        probe_view.saturation_png({"f": (np.zeros((1, 2)), np.zeros((1, 2)))}, tmp_path / "x.png")


def test_inspect_shows_the_texts_control_characters_as_pictures():
    from charrnn.inspect.view import visible

    assert visible("a\x1b[31mb\tc\n\x7f") == "a\u241b[31mb\tc\n\u2421"
    assert "\x1b" not in visible("".join(map(chr, range(32))))


# ----------------------------------------------------------------------------------- CLI errors


@pytest.fixture(scope="module")
def gru_ckpt(tmp_path_factory):
    m = random_model("gru")
    path = tmp_path_factory.mktemp("gru") / "gru.npz"
    checkpoint.save(path, {"model": m.config.to_dict(), "vocab": {"kind": "text", "chars": VOCAB}}, m.params)
    return path


def test_cli_errors(planted_ckpt, gru_ckpt, tmp_path):
    c = ("-c", planted_ckpt)
    error_line(invoke("-", *c, "--unit", "2:0", input="abc"), 1, "no unit 2:0", "0-1")
    error_line(invoke("-", *c, "--unit", "0:6", input="abc"), 1, "no unit 0:6", "0-5")
    error_line(invoke("-", *c, "--unit", "zero", input="abc"), 2, "LAYER:UNIT")
    error_line(
        invoke("-", "-c", gru_ckpt, "--unit", "0:1", "--state", "c", input="abc"),
        1,
        "no 'c' state",
        "h, r, z, n",
    )
    error_line(invoke("-", *c, "--find", "string", input="abz"), 1, "'z'", "--drop-unknown")
    error_line(invoke("-", *c, "--find", "string", "--drop-unknown", input="xyz"), 1, "empty")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    error_line(invoke(empty, *c, "--gates"), 1, "empty")
    error_line(invoke("-", *c, "--find", "colour", input="abc"), 2, "unknown feature")
    error_line(invoke("-", *c, "--find", "re:(", input="abc"), 2, "bad regular expression")
    error_line(invoke("-", *c, "--find", "string", input="abc"), 1, "same at every")
    error_line(invoke("-", *c, input="abc"), 2, "nothing to show")
    error_line(invoke("-", *c, "--html", tmp_path / "x.html", "--gates", input="abc"), 2, "--unit")
    error_line(invoke("-", *c, "--png", tmp_path / "x.png", input="abc"), 2, "--gates")
    rnn = random_model("rnn")
    path = tmp_path / "rnn.npz"
    checkpoint.save(
        path, {"model": rnn.config.to_dict(), "vocab": {"kind": "text", "chars": VOCAB}}, rnn.params
    )
    error_line(invoke("-", "-c", path, "--gates", input="abc"), 1, "no gates")


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_cli_unit_in_a_pipe_prints_the_plain_text(cell, tmp_path):
    m = random_model(cell)
    path = tmp_path / f"{cell}.npz"
    checkpoint.save(path, {"model": m.config.to_dict(), "vocab": {"kind": "text", "chars": VOCAB}}, m.params)
    text = "a = (b) 'c'\n  <&>"
    r = invoke("-", "-c", path, "--unit", "1:4", input=text)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == text + "\n"
    r = invoke("-", "-c", path, "--unit", "1:4", "--json", "--find", "brackets", input=text)
    out = json.loads(r.stdout)
    assert out["unit"]["text"] == text
    want = load(path).states(text).h[1, :, 4]
    np.testing.assert_allclose(out["unit"]["values"], want, atol=1e-6)
    assert {u["state"] for u in out["find"]["units"]} == {"h"}


def test_a_regex_feature_reads_the_text_line_by_line():
    """Issue 38: --find 're:^[+-]' on a diff matched at the text's start only."""
    np.testing.assert_array_equal(probe.feature("re:^[+-]", "+a\n-b\n c"), [1, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(probe.feature("re:b$", "ab\nbc"), [0, 1, 0, 0, 0])


def test_brackets_mean_brackets_on_any_text():
    """Issue 38: in a changelog the '#' of "(Closes: #1034958)" opened a Python comment that hid
    the ')', so the depth drifted up entry by entry and followed the position in the text."""
    entry = "  * Fix the build (Closes: #1034958)\n  * Say why [see #12]\n"
    depth = probe.feature("brackets", entry * 50)
    assert depth.max() == 1 and depth[-1] == 0
    assert probe.feature("python-brackets", entry * 50)[-1] == 100  # Python's rules: not for this


def test_help_lists_the_features():
    r = invoke("--help")
    assert r.exit_code == 0 and "Usage:" in r.stdout and r.stderr == ""
    for name in ("--unit", "--find", "--gates", "--html", "--png", "line-position"):
        assert name in r.stdout


def test_byte_model_shows_whole_characters(tmp_path):
    """A byte-level model steps once per byte: the page has a span per byte, a multi-byte
    character whole in its last byte's span, and the features see ASCII as it is."""
    vocab = bytes(sorted(set("a (é)\n".encode())))
    cfg = ModelConfig(cell="lstm", layers=1, hidden=3, vocab_size=len(vocab))
    m = CharModel(cfg, vocab, dtype=np.float64)
    m.flat[:] = np.random.default_rng(0).uniform(-0.5, 0.5, m.flat.size)
    path = tmp_path / "bytes.npz"
    checkpoint.save(path, {"model": cfg.to_dict(), "vocab": {"kind": "bytes", "ids": list(vocab)}}, m.params)
    text = "a (é)\n"
    r = invoke("-", "-c", path, "--unit", "0:1", "--find", "brackets", "--json", input=text)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["chars"] == 7 and out["unit"]["text"] == text
    ids = load(path).encode(text)
    assert probe_features.bracket_depth(probe.step_chars(m, ids)).tolist() == [0, 0, 1, 1, 1, 0, 0]
    page = probe_view.html_page(probe_view.pieces(m, ids), np.zeros(7), "h", "t")
    parsed = SpanCounter()
    parsed.feed(page)
    assert parsed.text == ["a", " ", "(", "", "é", ")", "\n"]
