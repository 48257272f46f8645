"""Adaptive write concurrency: as many writes in flight as the server shows it can take.

The approach is AIMD, as in TCP congestion control, with a delay signal as in TCP Vegas and
Netflix's concurrency-limits, rather than a pure gradient limiter (Gradient2). Why:

- The signals a real OpenMetadata deployment gives are of two kinds. Loss: ``429`` (with
  ``Retry-After``) from a rate limiter or gateway in front of it, ``503`` when it is overloaded,
  a timeout. Delay: answers slowing down as writes pile up. AIMD reacts to loss directly and
  predictably; a gradient limiter only sees latency and must be taught about 429 anyway.
- A gradient limiter moves the limit on every sample by the ratio of a short to a long latency
  average. On a loaded machine that ratio is noisy (the client's own event loop adds
  milliseconds), and Gradient2 is known to drift. AIMD changes the limit at most once per round
  trip by fixed, explainable steps, and is easy to test deterministically.

The rules (``AdaptiveLimit``), one decision per *round*: a round ends when as many writes as the
limit, all sent after the previous decision, have been answered (one to two round trips).

- **Slow start.** The limit starts at ``initial`` (default 4) and doubles every round while the
  server is healthy, up to ``maximum``: a healthy server reaches full concurrency within a few
  round trips, and the latency baseline is learnt while the server is not yet loaded (a limiter
  starting at its maximum against a congested server would take the congested latency for the
  normal one).
- **Loss** (429, 503 or a timeout of a write sent after the last decision): at once, the limit
  is halved in slow start (back to the last good round) and multiplied by 0.9 after it. Losses
  of writes sent before the last decrease are ignored: one reduction per round trip, as in TCP.
  The limit before the first decrease of a congestion episode is remembered as the *trouble
  point*.
- **Delay**: the lower quartile of the latencies of the round's successful writes above
  ``tolerance`` (1.5) x the *reference* counts as congestion, like a loss. The lower quartile,
  not the mean: the first write on each new connection (the limit just grew) pays for a TCP
  connect, and a server's own slow writes are not congestion; when the server slows down for
  everyone, the quartile moves with it. The reference is the lowest such quartile seen in slow
  start, then a moving average of those of healthy rounds, so that the noise a loaded machine
  adds to every answer is on both sides of the comparison while a server slowing down because
  of our extra writes shows as a step. So that the reference cannot drift upwards (with a slowly
  growing queue, or from the connects of the first rounds), it never counts for more than
  ``noise`` (1.25) x the lowest latency of about the last 1,000 successful writes: a round's
  quartile above 1.5 x 1.25 = 1.875 x that lowest latency is congestion whatever came before.
  One slow round right after the limit grew, or while already backing off, is enough (our extra
  writes are the likely cause); otherwise two in a row are needed, so that a pause of the
  machine (which delays every answer of a round at once) is not taken for a slower server.
- **Increase**: after a healthy round in which every slot was in use, +1 (additive increase);
  but within one step (1, or one decrease) of the trouble point, +1/8 per round, so the
  limiter probes above a known trouble point once every ~8 round trips instead of every one
  (what CUBIC does with its plateau). Past that point plus one without trouble, the server has
  grown and +1 per round resumes.
- **Idle**: after ``idle_reset`` seconds without a write (e.g. between daemon cycles) the next
  write starts over from slow start with a fresh baseline, since the server may have changed.

Other answers (4xx, other 5xx, connection errors) advance the round but carry no congestion
signal: only successful answers time the server, so a fast error page (the 500 of
a missing bulk route) cannot pass for the server's normal latency.

``ConcurrencyLimiter`` is the asyncio side: slots held for a whole write (so a stop checked once
a slot is held stops every queued write), released while a write sleeps before a retry (a write
waiting out ``Retry-After`` is not load on the server) and re-acquired ahead of new writes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

__all__ = ["UNPACED", "AdaptiveLimit", "ConcurrencyLimiter", "Signal", "Slot", "Ticket"]

T = TypeVar("T")
Signal = Literal["ok", "drop", "other"]

DEFAULT_INITIAL = 4
_BASELINE_BUCKET = 128  # successful writes per bucket of the windowed minimum
_BASELINE_BUCKETS = 8  # buckets kept: the baseline is the minimum of about the last 1,000 writes


@dataclass(frozen=True)
class Ticket:
    """One attempt of a write: when it was sent and in which round."""

    sent_at: float
    epoch: int


class AdaptiveLimit:
    """The limit's arithmetic, without asyncio: driven by :meth:`sent` and :meth:`answered`.

    ``clock`` is injectable so the rules can be tested on a fake clock.
    """

    def __init__(  # noqa: PLR0913 - keyword-only tuning knobs, each with a default and a unit test
        self,
        *,
        minimum: int,
        maximum: int,
        initial: int | None = None,
        tolerance: float = 1.5,
        noise: float = 1.25,
        smoothing: float = 0.25,
        backoff: float = 0.9,
        probe_step: float = 0.125,
        idle_reset: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum ({minimum}) <= maximum ({maximum})")
        self.minimum = minimum
        self.maximum = maximum
        start = DEFAULT_INITIAL if initial is None else initial
        self.initial = float(min(maximum, max(minimum, start)))
        self.tolerance = tolerance
        self.noise = noise
        self.smoothing = smoothing
        self.backoff = backoff
        self.probe_step = probe_step
        self.idle_reset = idle_reset
        self._clock = clock
        self.decreases = 0
        self.increases = 0
        self._reset()
        self._last_event = clock()

    def _reset(self) -> None:
        self.limit = self.initial
        self.slow_start = self.limit < self.maximum
        self.ceiling: float | None = None
        self.reference: float | None = None
        self._grew = False  # the last decision raised the number of slots
        self._slow_rounds = 0  # consecutive rounds slower than the reference, not yet acted on
        self._decreasing = False  # in a congestion episode (the last change was a decrease)
        self._epoch = 0
        self._round_ok: list[float] = []
        self._round_seen = 0
        self._round_full = False
        self._round_size = self.slots
        self._buckets: deque[float] = deque(maxlen=_BASELINE_BUCKETS)
        self._bucket_min = float("inf")
        self._bucket_count = 0

    @property
    def slots(self) -> int:
        """Writes allowed in flight now."""
        return max(self.minimum, min(self.maximum, int(self.limit)))

    @property
    def baseline(self) -> float | None:
        """The lowest latency of about the last 1,000 successful writes; None before the first."""
        low = min([self._bucket_min, *self._buckets])
        return None if low == float("inf") else low

    def sent(self, in_flight: int) -> Ticket:
        """An attempt is being sent; ``in_flight`` counts the slots held, this one included."""
        now = self._clock()
        if in_flight <= 1 and now - self._last_event > self.idle_reset:
            self._reset()
        self._last_event = now
        if in_flight >= self.slots:
            self._round_full = True
        return Ticket(now, self._epoch)

    def answered(self, ticket: Ticket, signal: Signal) -> None:
        """The attempt of ``ticket`` ended: ``ok`` (2xx), ``drop`` (429/503/timeout) or ``other``."""
        now = self._clock()
        self._last_event = now
        if signal == "ok":
            self._observe(now - ticket.sent_at)
        if ticket.epoch != self._epoch:
            return  # sent before the last decision: it tells about the old limit, not this one
        if signal == "drop":
            self._decrease()
            return
        self._round_seen += 1
        if signal == "ok":
            self._round_ok.append(now - ticket.sent_at)
        if self._round_seen >= self._round_size:
            self._decide()

    def _observe(self, latency: float) -> None:
        self._bucket_min = min(self._bucket_min, latency)
        self._bucket_count += 1
        if self._bucket_count >= _BASELINE_BUCKET:
            self._buckets.append(self._bucket_min)
            self._bucket_min, self._bucket_count = float("inf"), 0

    def _decide(self) -> None:
        baseline = self.baseline
        if not self._round_ok or baseline is None:
            self._new_round()
            return
        typical = _lower_quartile(self._round_ok)
        reference = typical if self.reference is None else self.reference
        if typical > self.tolerance * min(reference, self.noise * baseline):
            if self._grew or self._decreasing or self._slow_rounds >= 1:
                self._decrease()
            else:
                self._slow_rounds += 1
                self._new_round()
            return
        self._slow_rounds = 0
        if self.slow_start:
            self.reference = min(reference, typical)
        else:
            self.reference = reference + self.smoothing * (typical - reference)
        if self._round_full:
            self._increase()
        else:
            self._new_round()

    def _decrease(self) -> None:
        if not self._decreasing:
            self.ceiling = self.limit
        self._decreasing = True
        self._slow_rounds = 0
        if self.slow_start:
            self.slow_start = False
            self.limit = max(float(self.minimum), self.limit / 2)
        else:
            self.limit = max(float(self.minimum), self.limit * self.backoff)
        self.decreases += 1
        self._new_round(grew=False)

    def _increase(self) -> None:
        self._decreasing = False
        before = self.slots
        if self.slow_start:
            # Ends after a healthy round at the maximum: congestion right after the last doubling
            # still goes back to the last good round.
            self.slow_start = self.limit < self.maximum
            self.limit = min(float(self.maximum), self.limit * 2)
        else:
            if self.ceiling is not None and self.limit > self.ceiling + 1:
                self.ceiling = None  # well past the last trouble point: the server has grown
            # Within one step (1, or one decrease) of the trouble point: approach it slowly.
            step = 1.0 if self.ceiling is None else max(1.0, self.ceiling * (1 - self.backoff))
            near = self.ceiling is not None and self.limit >= self.ceiling - step - 1e-9
            self.limit = min(float(self.maximum), self.limit + (self.probe_step if near else 1.0))
        self.increases += 1
        self._new_round(grew=self.slots > before)

    def _new_round(self, *, grew: bool = False) -> None:
        self._grew = grew
        self._epoch += 1
        self._round_ok = []
        self._round_seen = 0
        self._round_full = False
        self._round_size = self.slots


def _lower_quartile(values: list[float]) -> float:
    return sorted(values)[(len(values) - 1) // 4]


class ConcurrencyLimiter:
    """Slots for concurrent writes, as many as :class:`AdaptiveLimit` allows at the moment."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Hold one slot for a whole write (its retries included)."""
        await self._acquire(first=False)
        slot = Slot(self)
        try:
            yield slot
        finally:
            if slot.held:
                self._release()

    async def _acquire(self, *, first: bool) -> None:
        if self.in_flight < self.limit.slots and (first or not self._waiters):
            self.in_flight += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(future)
        else:
            self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # granted just as we were cancelled: hand it on
            elif future in self._waiters:  # a release may already have dropped the cancelled future
                self._waiters.remove(future)
            raise

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit.slots:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)


class Slot:
    """One held slot; the write reports each attempt through it. ``Slot(None)`` does nothing."""

    def __init__(self, limiter: ConcurrencyLimiter | None) -> None:
        self._limiter = limiter
        self.held = limiter is not None
        self._ticket: Ticket | None = None

    def sent(self) -> None:
        if self._limiter is not None:
            self._ticket = self._limiter.limit.sent(self._limiter.in_flight)

    def answered(self, status: int | None, *, timed_out: bool = False) -> None:
        """Feed the outcome of the attempt just sent: its HTTP status, or None when none came."""
        if self._limiter is None or self._ticket is None:
            return
        if timed_out or status in (429, 503):
            signal: Signal = "drop"
        elif status is not None and 200 <= status < 300:
            signal = "ok"
        else:
            signal = "other"
        self._limiter.limit.answered(self._ticket, signal)
        self._ticket = None
        self._limiter._wake()  # the limit may have grown

    async def outside(self, waiting: Awaitable[T]) -> T:
        """Await ``waiting`` (a retry's pause) without holding the slot; get one back first in line."""
        if self._limiter is None:
            return await waiting
        self._limiter._release()
        self.held = False
        # Cancelled while waiting or queued: ``held`` stays False, so nothing is released twice.
        result = await waiting
        await self._limiter._acquire(first=True)
        self.held = True
        return result


UNPACED = Slot(None)
"""The slot of a request outside the write limit (reads): it feeds nothing and holds nothing."""
