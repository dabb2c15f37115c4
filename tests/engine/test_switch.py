"""The Switch between the serial and the split batch-1 sampling paths (engine/switch.py): its
choices against simulated speeds, and the text of a Sampler that switches, which must be the
serial path's."""

import numpy as np
import pytest

from charrnn.engine import sampler, switch, threads
from charrnn.engine.switch import SERIAL, SPLIT, Switch
from charrnn.engine.sample_kernels import Pick
from reference import tiny


def simulate(per_char, n, chunk_calls=None, per_call=0.0, helped=lambda done: 1.0):
    """Run a Switch over n characters where per_char(path, done) gives each path's seconds a
    character once `done` characters are made; the first call of a path also costs 0.1 s of
    loading, and every call of the split path per_call seconds (its threads starting);
    helped(done), the share of the helpers' chunks their threads ran in a split call.
    Returns (switch, seconds spent on each path, [(path, count)] chunks)."""
    s = Switch()
    spent = {SERIAL: 0.0, SPLIT: 0.0}
    chunks = []
    done = 0
    while done < n:
        path, k = s.plan(n - done)
        assert 1 <= k <= n - done
        secs = k * per_char(path, done) + (0.0 if path in s.called else 0.1)
        secs += per_call if path == SPLIT else 0.0
        s.observe(path, k, secs, helped(done) if path == SPLIT else 1.0)
        spent[path] += secs
        chunks.append((path, k))
        done += k
    return s, spent, chunks


def test_a_short_sample_never_tries_the_split_path():
    """Under WARM seconds of serial work the split kernels are not even loaded."""
    n = int(0.5 * switch.WARM / 2.5e-4)  # half of WARM at 4k chars/s
    s, spent, chunks = simulate(lambda path, done: 2.5e-4, n)
    assert {p for p, _ in chunks} == {SERIAL} and spent[SPLIT] == 0


def test_the_split_path_takes_over_when_it_is_faster():
    s, spent, chunks = simulate(lambda path, done: 2.5e-4 if path == SERIAL else 1.4e-4, 100_000)
    assert s.use == SPLIT
    assert s.counts[SPLIT] > 0.95 * 100_000
    assert s.counts[SERIAL] < 0.05 * 100_000  # the warm-up, and its trials from time to time


def test_a_split_path_faster_by_the_character_wins_despite_what_each_call_costs():
    """At 2 x 128 a character takes 11 us serially, 8 us split, and each split call 0.1 ms
    more (its helper thread starting): trials of a few characters would show it losing."""
    s, _, _ = simulate(lambda path, done: 1.1e-5 if path == SERIAL else 8e-6, 300_000, per_call=1e-4)
    assert s.use == SPLIT
    assert s.counts[SPLIT] > 0.9 * 300_000


def test_a_busy_core_costs_the_split_trials_little():
    """Beside a busy core the split path is 100x slower: trials of it take at most about
    PROBE_SHARE of the time (plus its one untimed loading call)."""
    s, spent, _ = simulate(lambda path, done: 2.5e-4 if path == SERIAL else 2.5e-2, 200_000)
    assert s.use == SERIAL
    total = spent[SERIAL] + spent[SPLIT]
    loading = 0.1 + 2.5e-2  # the first call (one character) loads, and is not timed
    assert spent[SPLIT] - loading <= 1.2 * switch.PROBE_SHARE * total
    assert total < (1 + 1.5 * switch.PROBE_SHARE) * 200_000 * 2.5e-4 + loading


def test_when_a_core_gets_busy_mid_sample_the_serial_path_takes_over_within_a_chunk():
    busy_from = 50_000

    def per_char(path, done):
        if path == SERIAL:
            return 2.5e-4
        return 1.4e-4 if done < busy_from else 2.5e-2

    s, _, chunks = simulate(per_char, 100_000)
    assert s.use == SERIAL
    done, slow_split = 0, 0
    for path, k in chunks:
        if path == SPLIT and done >= busy_from:
            slow_split += k
        done += k
    # after the load changes: the chunk that shows it, then only trials
    assert slow_split <= switch.TARGET / 1.4e-4 + 10 * switch.PROBE


def test_the_split_path_comes_back_when_the_core_is_free_again():
    def per_char(path, done):
        if path == SERIAL:
            return 2.5e-4
        return 1.4e-4 if not 20_000 <= done < 40_000 else 2.5e-2

    s, _, chunks = simulate(per_char, 400_000)
    assert s.use == SPLIT


def test_a_split_path_whose_helpers_are_absent_never_takes_over():
    """Helpers that ran a third of their chunks (the sampling thread ran the rest): another
    process holds their core. Even if the times say the split path is faster (timed moments
    apart from the serial path's, under a load that comes and goes) the serial path stays."""
    s, _, chunks = simulate(
        lambda path, done: 2.5e-4 if path == SERIAL else 1.4e-4, 200_000, helped=lambda done: 0.3
    )
    assert s.use == SERIAL
    assert s.counts[SPLIT] < 0.05 * 200_000


def test_the_serial_path_takes_over_when_the_helpers_go_missing_mid_sample():
    """The split path in use, then its helpers absent from 50,000 characters on while its time
    a character hardly changes: the serial path takes over within a chunk, and the split path
    comes back once they are there again."""
    away = (50_000, 100_000)

    def helped(done):
        return 0.2 if away[0] <= done < away[1] else 1.0

    s, _, chunks = simulate(lambda path, done: 2.5e-4 if path == SERIAL else 1.4e-4, 300_000, helped=helped)
    done, split_away = 0, 0
    for path, k in chunks:
        if path == SPLIT and away[0] <= done < away[1]:
            split_away += k
        done += k
    assert split_away <= switch.TARGET / 1.4e-4 + 10 * switch.PROBE
    assert s.use == SPLIT


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(sampler, "PARALLEL_MIN_HIDDEN", 6)
    monkeypatch.setattr(threads, "available", lambda: 2)
    monkeypatch.delenv("CHARRNN_THREADS", raising=False)


@pytest.mark.parametrize("L", [1, 2])
def test_a_sampler_that_switches_paths_mid_sample_writes_the_serial_text(L, two_cores, monkeypatch):
    """Chunks alternating between the paths at odd lengths, within and across generate() calls,
    with a prime and the repetition penalties: the same ids and state as the serial path."""
    m, rng = tiny("lstm", L=L, H=6)
    plan = iter([(SERIAL, 3), (SPLIT, 1), (SPLIT, 7), (SERIAL, 1), (SPLIT, 2)] * 100)

    def scripted(self, remaining):
        path, k = next(plan)
        return path, min(k, remaining)

    monkeypatch.setattr(Switch, "plan", scripted)
    auto, serial = sampler.Sampler(m, 1), sampler.Sampler(m, 1, parallel=False)
    assert auto.switch is not None and serial.switch is None
    ids = rng.integers(0, 7, 15)
    for s in (auto, serial):
        s.prime(ids)
    for n in (1, 40, 5, 13, 90):
        a = auto.generate(n, np.random.default_rng(n), Pick(0.9, 0, 1.0, -1, 0.4, 0.1, 0, 3))
        b = serial.generate(n, np.random.default_rng(n), Pick(0.9, 0, 1.0, -1, 0.4, 0.1, 0, 3))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(auto.h, serial.h)
        np.testing.assert_array_equal(auto.c, serial.c)
    assert auto.switch.counts[SPLIT] > 0 and auto.switch.counts[SERIAL] > 0


def test_which_samplers_get_a_switch(two_cores, monkeypatch):
    m = tiny("lstm", H=6)[0]
    assert sampler.Sampler(m, 1).switch is not None
    assert sampler.Sampler(m, 1, parallel=False).switch is None
    assert sampler.Sampler(m, 1, parallel=True).switch is None  # forced: no choice to make
    assert sampler.Sampler(m, 2).switch is None  # several rows: one serial batch
    assert sampler.Sampler(tiny("gru", H=6)[0], 1).switch is None
    assert sampler.Sampler(tiny("lstm", H=5)[0], 1).switch is None  # 5 units: no 2 chunks
    monkeypatch.setenv("CHARRNN_THREADS", "1")
    assert sampler.Sampler(m, 1).switch is None  # one core asked for
    with pytest.raises(ValueError):
        sampler.Sampler(tiny("gru", H=6)[0], 1, parallel=True)


def test_the_split_path_is_loaded_on_a_thread_of_its_own_then_tried(two_cores, monkeypatch):
    """Past WARM seconds of serial sampling the Sampler lays out and loads the split path in
    the background, then tries it; the text stays the serial path's."""
    monkeypatch.setattr(switch, "WARM", 0.0)
    m, rng = tiny("lstm", L=2, H=6)
    auto, serial = sampler.Sampler(m, 1), sampler.Sampler(m, 1, parallel=False)
    for s in (auto, serial):
        s.prime(rng.integers(0, 7, 4))
    got, want = [], []
    for i in range(40):
        got.append(auto.generate(25, np.random.default_rng(i), Pick(0.8)))
        want.append(serial.generate(25, np.random.default_rng(i), Pick(0.8)))
        if auto._loader is not None:
            auto._loader.join()
    assert auto.split is not None and auto.switch.counts[SPLIT] > 0
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))
