"""Sampling that does not loop (issue 23): presence and frequency penalties and no-repeat n-grams
against a naive NumPy reference of the draw, with the same coins; the options off give the text
of before, bit for bit; a long greedy sample with --no-repeat never repeats an n-gram; and bad
values are usage errors (exit 2) in the library and the command line alike."""

import hashlib
import math
from dataclasses import replace

import numpy as np
import pytest

import charrnn
from charrnn.engine import sample_kernels, sampler
from charrnn.config import ModelConfig, SampleConfig
from charrnn.errors import UsageError
from charrnn.engine.model import Model
from charrnn.engine.sample_kernels import Pick
from conftest import invoke


def tiny(cell="lstm", L=2, H=5, V=7, seed=0, dtype=np.float64):
    cfg = ModelConfig(cell=cell, layers=L, hidden=H, vocab_size=V)
    m = Model(cfg, dtype=dtype)
    m.flat[:] = np.random.default_rng(seed).uniform(-0.6, 0.6, m.flat.size)
    return m


def typed_pick(*values):
    """The Pick of positional values, each typed as sampler.pick_of types a SampleConfig's
    (so that (0, 0, 1, -1) runs the kernels compiled for the command line's)."""
    kinds = Pick.__annotations__
    return Pick._make(kinds[f](v) for f, v in zip(Pick._fields, Pick(*values)))


def draw(m, picks, options=(), chunks=(7, 50, 1), N=3):
    """The ids of one Sampler over each (temp, top_k, top_p, banned), drawn in chunks."""
    out = []
    for how in picks:
        s = sampler.Sampler(m, N)
        s.prime(np.array([1, 2, 3]))
        rng = np.random.default_rng(5)
        out.append(np.concatenate([s.generate(n, rng, typed_pick(*how, *options)) for n in chunks]))
    return np.concatenate(out)


PICKS = [(0, 0, 1, -1), (0.9, 0, 1, -1), (1.0, 3, 1, 2), (0.8, 0, 0.7, -1)]
# sha256 of draw(tiny(cell, dtype), PICKS) by the sampler before the repetition options existed
# (main at 037c66e): with them off, the same coins must give the same ids, bit for bit
BEFORE = {"lstm": "eb6c198e26fab32b", "gru": "5ea9e3a644475e32"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_options_off_draw_the_ids_of_before(cell, dtype):
    m = tiny(cell, dtype=dtype)
    for options in ((), (0.0, 0.0, 0, 0), (0.0, 0.0, 50, 0)):
        ids = draw(m, PICKS, options)
        assert hashlib.sha256(ids.tobytes()).hexdigest()[:16] == BEFORE[cell]


# -- the naive reference -----------------------------------------------------------------------


def reference_pick(logits, coin, temp, top_k, top_p, banned, ban):
    """draw() as NumPy: the likeliest allowed id at temp 0, else a draw by the coin from the
    tempered, top-k- and top-p-cut probabilities of the allowed ids."""
    V = len(logits)
    allowed = np.ones(V, bool)
    allowed[list(ban)] = False
    if banned >= 0:
        allowed[banned] = False
    masked = np.where(allowed, logits, -np.inf)
    best = int(np.argmax(masked))
    if temp <= 0:
        return best
    prob = np.where(allowed, np.exp((logits - masked[best]) / temp), 0.0)
    if 0 < top_k < V:
        prob[prob < np.sort(prob)[V - top_k]] = 0.0
    if top_p < 1:
        order = np.argsort(-prob, kind="stable")
        cum = np.cumsum(prob[order])
        thr = prob[order][np.searchsorted(cum, top_p * prob.sum())]
        prob[prob < thr] = 0.0
    hit = np.nonzero((np.cumsum(prob) > coin * prob.sum()) & (prob > 0))[0]
    return int(hit[0]) if len(hit) else best


def reference_sample(m, prime, n, N, coins, how, presence, frequency, window, no_repeat):
    """Each row stepped by the sampler's one-step kernel; its logits penalised, its no-repeat
    ban found and its id drawn by brute force from its own history."""
    s = sampler.Sampler(m, N)
    h, c = m.zero_state(N)
    for x in prime[:-1]:
        sample_kernels.step(m.cell, m.params, s.work, np.full(N, x, np.int64), h, c)
    cur = np.full(N, prime[-1], np.int64)
    hist = [[] for _ in range(N)]
    out = np.zeros((n, N), np.int64)
    for t in range(n):
        sample_kernels.step(m.cell, m.params, s.work, cur, h, c)
        logits = h[-1] @ m.params.Wy + m.params.by
        for k in range(N):
            seen = hist[k][-window:] if window else hist[k]
            counts = np.bincount(np.array(seen, np.int64), minlength=logits.shape[1])
            row = logits[k] - frequency * counts - presence * (counts > 0)
            V, ban = logits.shape[1], set()
            if no_repeat and len(hist[k]) >= no_repeat - 1:
                ctx = hist[k][len(hist[k]) - no_repeat + 1 :]
                ended = {}  # follower: where its n-gram last ended
                for i in range(len(hist[k]) - no_repeat + 1):
                    if hist[k][i : i + no_repeat - 1] == ctx:
                        ended[hist[k][i + no_repeat - 1]] = i + no_repeat - 1
                ban = set(ended)
                if len(ban | {how[3]} - {-1}) >= V:  # every id would repeat: the oldest
                    ban = set(range(V)) - {min(ended, key=ended.get)}
            out[t, k] = reference_pick(row, coins[t, k], *how, ban)
            hist[k].append(int(out[t, k]))
        cur = out[t].copy()
    return out


CASES = [  # (presence, frequency, window, no_repeat)
    (0.7, 0.0, 0, 0),
    (0.0, 0.3, 0, 0),
    (-0.5, 0.2, 0, 0),
    (1.5, 0.4, 9, 0),
    (0.0, 0.0, 0, 3),
    (0.4, 0.1, 5, 2),
    (0.0, 0.0, 0, 1),
    (0.0, 0.0, 0, 5),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("how", PICKS)
def test_penalties_and_no_repeat_match_a_naive_reference(case, how):
    """Over 300 characters in chunks that outgrow the history's first allocation, each of 3
    rows keeping its own counts and n-grams: the same ids as the reference, coin for coin."""
    m, N, chunks = tiny("lstm"), 3, (40, 257, 3)
    s = sampler.Sampler(m, N)
    s.prime(np.array([1, 2, 3]))
    rng = np.random.default_rng(11)
    got = np.concatenate([s.generate(n, rng, typed_pick(*how, *case)) for n in chunks])
    coins = np.random.default_rng(11).random((sum(chunks), N))
    want = reference_sample(m, [1, 2, 3], sum(chunks), N, coins, how, *case)
    np.testing.assert_array_equal(got, want)


def test_the_split_lstm_path_applies_them_too(monkeypatch):
    """Batch-1 sampling of a wide LSTM split across cores: the serial path's ids."""
    m = tiny("lstm", L=2, H=6)
    ids = {}
    for parallel in (False, True):
        s = sampler.Sampler(m, 1, parallel=parallel)
        s.prime(np.array([1, 2]))
        rng = np.random.default_rng(3)
        ids[parallel] = np.concatenate(
            [s.generate(n, rng, Pick(0.9, 0, 1.0, -1, 0.5, 0.2, 7, 3)) for n in (30, 300)]
        )
    np.testing.assert_array_equal(ids[False], ids[True])


def test_the_options_cannot_change_mid_sample():
    s = sampler.Sampler(tiny(), 1)
    s.prime(np.array([0]))
    s.generate(5, np.random.default_rng(0), Pick(0.0, no_repeat=3))
    with pytest.raises(ValueError):
        s.generate(5, np.random.default_rng(0), Pick(0.0, no_repeat=4))


# -- through the library and the command line --------------------------------------------------


def ngrams(text, n):
    return [text[i : i + n] for i in range(len(text) - n + 1)]


def forced_repeats(text, n, symbols):
    """(repeated n-grams, those not forced): an n-gram repeats unforced when its context had
    not yet been followed by every symbol."""
    seen, followers, repeats, unforced = set(), {}, 0, 0
    for g in ngrams(text, n):
        if g in seen:
            repeats += 1
            unforced += followers[g[:-1]] != set(symbols)
        seen.add(g)
        followers.setdefault(g[:-1], set()).add(g[-1])
    return repeats, unforced


def test_a_long_greedy_sample_never_repeats_an_ngram(cli_run):
    """This 40-step model writes little but 'd', so it soon meets contexts followed by every
    character already: only there, by the fallback, does an n-gram repeat."""
    model = charrnn.load(cli_run)
    plain = model.sample(3000, temp=0, include_prime=False)
    assert forced_repeats(plain, 8, model.vocab.symbols)[1] > 2000  # greedy alone loops
    for n in (8, 12, 16):
        text = model.sample(3000, temp=0, include_prime=False, no_repeat=n)
        assert len(text) == 3000
        repeats, unforced = forced_repeats(text, n, model.vocab.symbols)
        assert unforced == 0 and repeats < 100, (n, repeats)
    # 6 characters: after the first six every one repeats a 1-gram, and the sample goes on,
    # round the characters by the fallback (the least recent n-gram)
    one = model.sample(60, temp=0, include_prime=False, no_repeat=1)
    assert len(set(one[:6])) == 6 and one[6:] == one[:6] * 9


def test_each_row_of_a_batch_repeats_only_where_forced():
    m = tiny("gru", H=16)
    texts = {}
    for n in (0, 7):
        s = sampler.Sampler(m, 2)
        s.prime(np.array([0]))
        texts[n] = [
            "".join("abcdefg"[i] for i in col)
            for col in s.generate(4000, np.random.default_rng(0), Pick(0.0, no_repeat=n)).T
        ]
    for plain, t in zip(texts[0], texts[7]):
        assert forced_repeats(plain, 7, "abcdefg")[0] > 3000
        repeats, unforced = forced_repeats(t, 7, "abcdefg")
        assert unforced == 0 and repeats < 100


def test_stream_and_complete_take_them(cli_run):
    model = charrnn.load(cli_run)
    opts = dict(length=300, temp=0.8, seed=4, presence_penalty=0.6, frequency_penalty=0.2, no_repeat=6)
    streamed = "".join(model.stream("ab", **opts))
    assert (
        streamed
        == model.complete("ab", **opts)[0].text
        == model.sample(prime="ab", include_prime=False, **opts)
    )
    done = model.complete("ab", num_samples=2, **opts)
    assert done[0].text != done[1].text
    assert streamed != "".join(model.stream("ab", **dict(opts, presence_penalty=0.0)))


def test_cli_options_off_print_the_text_of_before_and_on_change_it(cli_run):
    base = invoke("sample", "-c", cli_run, "-n", "300", "--temp", "0")
    zeros = invoke(
        "sample",
        "-c",
        cli_run,
        "-n",
        "300",
        "--temp",
        "0",
        "--presence-penalty",
        "0",
        "--frequency-penalty",
        "0",
        "--no-repeat",
        "0",
        "--penalty-window",
        "9",
    )
    assert base.exit_code == zeros.exit_code == 0
    assert base.stdout == zeros.stdout
    for option in (["--presence-penalty", "1"], ["--frequency-penalty", "0.5"], ["--no-repeat", "10"]):
        r = invoke("sample", "-c", cli_run, "-n", "300", "--temp", "0", *option)
        assert r.exit_code == 0 and r.stdout != base.stdout and len(r.stdout) == len(base.stdout)


@pytest.mark.parametrize(
    "option, value",
    [
        ("--presence-penalty", "2.5"),
        ("--presence-penalty", "nan"),
        ("--frequency-penalty", "-3"),
        ("--frequency-penalty", "inf"),
        ("--no-repeat", "-1"),
        ("--penalty-window", "-2"),
    ],
)
def test_bad_values_are_usage_errors(cli_run, option, value):
    r = invoke("sample", "-c", cli_run, "-n", "5", option, value)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert option in r.stderr


@pytest.mark.parametrize(
    "field, value",
    [
        ("presence_penalty", math.nan),
        ("presence_penalty", -2.01),
        ("frequency_penalty", math.inf),
        ("frequency_penalty", "0.5"),
        ("no_repeat", 2.0),
        ("no_repeat", True),
        ("penalty_window", -1),
    ],
)
def test_the_library_refuses_them_in_the_same_words(field, value):
    with pytest.raises(UsageError, match="--" + field.replace("_", "-")):
        SampleConfig(**{field: value}).validate()


def test_the_bounds_themselves_are_allowed():
    SampleConfig(presence_penalty=-2, frequency_penalty=2.0, no_repeat=1).validate()


def test_a_pick_carries_sample_configs_settings_by_their_names():
    """pick_of copies each of the kernel's settings from the SampleConfig field of its name, so
    a new sampling option is a field in each, not a position to keep in step in every caller."""
    cfg = SampleConfig(temp=0.7, top_k=3, top_p=0.9, presence_penalty=0.5, frequency_penalty=-0.25)
    cfg = replace(cfg, penalty_window=12, no_repeat=4)
    pick = sampler.pick_of(cfg, banned=5)
    assert set(Pick._fields) - {"banned"} <= set(SampleConfig.__dataclass_fields__)
    assert pick == Pick(0.7, 3, 0.9, 5, 0.5, -0.25, 12, 4)
    assert [type(v) for v in pick] == [Pick.__annotations__[f] for f in Pick._fields]
    rows = sampler.pick_rows([pick, sampler.pick_of(SampleConfig())])
    assert rows.temp.tolist() == [0.7, 1.0] and rows.top_k.dtype == np.int64
