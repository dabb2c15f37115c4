"""Choosing, while a batch-1 sample runs, between the serial path and the path split across
cores (sampler.py), from the rates the work itself shows.

The split path is faster only while every core it meets at each layer is free: beside a busy
core it waits on that core's scheduler, a hundred times longer than the serial path takes. What
the other cores are doing is not asked of the system; each path's own seconds per character,
timed around the calls that make the text, decide. The Sampler cuts a generate() call into
chunks, asks `plan` which path and how many characters, and reports the time with `observe`:

- the serial path comes first; after WARM seconds of it the Sampler is asked to `prepare` the
  split path (lay its weights out and load its kernels, on a thread of its own, so the serial
  path goes on meanwhile), and it is tried once `ready` says so. A sample shorter than WARM
  seconds never pays for loading it, and a first run's compiling does not stall the text;
- the path not in use is tried from time to time: WARMING characters that warm the caches with
  its weights (each path has its own layout of them, and a cold trial reads them from memory;
  the first trials lost on a quiet machine so), then, unless those were HOPELESS (beyond what
  a call costs anyway), a longer chunk, timed: PROBE characters, or TRIAL seconds of the path
  in use if that is more. It takes over when it is faster by MARGIN;
- a trial that loses pays for itself: the next one waits until the path in use has run
  1 / PROBE_SHARE times as long as the trial cost, so trials take at most PROBE_SHARE of the
  time whatever the other path's speed, and the wait doubles after each loss;
- the path in use is timed on every chunk, so when another process takes a core the split path
  loses its lead within a chunk and the serial path takes over at once;
- a split chunk also reports the share of the helpers' chunks of units the helper threads ran
  (the sampling thread runs those they have not started: sample_kernels.step_split). Below
  HELPED, another process holds their core: the chunk counts as a loss whatever its time
  (not a trial's warming chunk: it is where the helpers wake).
  With the helpers that absent the split path is little faster at best, its times beside the
  serial path's taken moments apart compare noise, and its helpers take that process's time.

Both paths compute the same numbers in the same order, so the text does not depend on the
choices (tests/engine/test_switch.py and the split path's tests in test_kernels.py).
"""

import math
import time

SERIAL, SPLIT = "serial", "split"

# fmt: off
WARM = 0.25          # seconds of serial sampling before the split path is first tried
WARMING, PROBE = 2, 16  # characters in a trial's two chunks: warming the caches, then timed
TRIAL = 0.005        # ... and the timed one at least as long as this on the path in use, so
# that what a call costs besides its characters (the split path's threads starting, about
# 0.1 ms) is a small part of it even where a character takes 10 us
CALL = 0.0005        # seconds a warming chunk may take beyond HOPELESS x its characters
TARGET = 0.02        # seconds a chunk aims at: short, so a change of load is seen soon
MIN_CHUNK, MAX_CHUNK = 8, 4096
MARGIN = 0.9         # a trial takes over when its time per character is below MARGIN x the other's
HOPELESS = 4.0       # a trial whose warming chunk is this many times slower ends there
PROBE_SHARE = 0.03   # the most of the time trials that lose may take
HELPED = 0.5         # a split chunk whose helpers ran less of their share than this loses
FIRST_WAIT = 2048    # characters on the path in use before a trial, at first
# fmt: on


class Switch:
    """The choice of path for one Sampler. prepare(): start making the split path ready (called
    once); ready(): whether it is; clock: seconds, monotonic (for tests)."""

    def __init__(self, prepare=lambda: None, ready=lambda: True, clock=time.perf_counter):
        self.prepare, self.ready, self.clock = prepare, ready, clock
        self.prepared = False
        self.use = SERIAL
        self.per_char = {SERIAL: None, SPLIT: None}  # seconds a character, last measured
        self.called = set()  # paths called once: the first call loads kernels, so is not timed
        self.serial_seconds = 0.0
        self.since = 0  # characters on self.use since the last trial
        self.wait = FIRST_WAIT  # ... before the next trial
        self.counts = {SERIAL: 0, SPLIT: 0}  # characters made on each path (for reports)
        self.warmed = False  # a trial's first chunk (its caches warming) is done
        self.cost = 0.0  # seconds the trial under way has taken

    def other(self, path):
        return SPLIT if path == SERIAL else SERIAL

    def plan(self, remaining):
        """(path, n): the path for the next chunk and how many characters, n <= remaining."""
        other = self.other(self.use)
        if SPLIT not in self.called and self.serial_seconds >= WARM and not self.prepared:
            self.prepared = True
            self.prepare()
        if SPLIT not in self.called and not (self.prepared and self.ready()):
            path = SERIAL
        elif other not in self.called or self.per_char[other] is None or self.since >= self.wait:
            path = other
        else:
            path = self.use
        rate = self.per_char[path]
        if path not in self.called:
            n = 1  # the call that loads it: beside a busy core one character costs enough
        elif path != self.use and not self.warmed:
            n = WARMING  # short: beside a busy core each character may take milliseconds
        elif path != self.use or rate is None:
            n = self._trial(PROBE, TRIAL)
        else:
            n = int(min(MAX_CHUNK, max(MIN_CHUNK, TARGET / max(rate, 1e-9))))
        return path, max(1, min(n, remaining))

    def _trial(self, least, seconds):
        """Characters in a trial's chunk: least, or what the path in use makes in seconds."""
        mine = self.per_char[self.use]
        return least if mine is None else max(least, int(seconds / max(mine, 1e-9)))

    def observe(self, path, n, seconds, helped=1.0):
        """Chunk of n characters on path took seconds; helped: the share of the helpers'
        chunks of units their threads ran (the split path)."""
        self.counts[path] += n
        if path == SERIAL:
            self.serial_seconds += seconds
        if path not in self.called:  # loading, not sampling: try it again, timed
            self.called.add(path)
            return
        other = self.other(path)
        theirs = self.per_char[other]
        deserted = helped < HELPED
        if path == self.use:  # smoothed, so that one chunk slowed by a passing blip is not enough
            last = self.per_char[path]
            self.per_char[path] = seconds / n if last is None else 0.5 * (last + seconds / n)
            self.since += n
            if deserted:  # no rate to compare until a trial measures one
                self.per_char[path] = math.inf
            if theirs is not None and self.per_char[path] * MARGIN > theirs:
                self._take(other)  # lost its lead (another process took a core): swap now
                self.wait = FIRST_WAIT // 8  # and soon try back, in case that was a blip
            return
        self.cost += seconds
        self.per_char[path] = seconds / n
        mine = self.per_char[self.use]
        # (the warming chunk is where the helpers wake: it may find none of them yet)
        if not self.warmed and mine is not None and seconds < HOPELESS * mine * n + CALL:
            self.warmed = True  # warm, and not hopeless: time the next chunk
            self.per_char[path] = None
            return
        self.warmed = False
        if deserted:
            self.per_char[path] = math.inf
        if mine is None or self.per_char[path] < MARGIN * mine:
            self._take(path)
            return
        # the trial lost: wait until the path in use has run 1/PROBE_SHARE times its cost
        afford = self.cost / PROBE_SHARE / max(mine, 1e-9)
        self.wait = int(min(1 << 30, max(2 * self.wait, afford)))
        self.since = self.cost = 0

    def _take(self, path):
        self.use, self.since, self.wait, self.cost = path, 0, FIRST_WAIT, 0.0

    def run(self, n, call):
        """Make n characters: call(path, start, count) for each chunk, timed; it returns the
        share of the helpers' chunks their threads ran (split), or None."""
        done = 0
        while done < n:
            path, k = self.plan(n - done)
            t0 = self.clock()
            helped = call(path, done, k)
            self.observe(path, k, self.clock() - t0, 1.0 if helped is None else helped)
            done += k
