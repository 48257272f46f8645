"""The adaptive write limit: its rules on a fake clock, and its asyncio slots.

``AdaptiveLimit`` is pure arithmetic driven by ``sent``/``answered`` and an injected clock, so
each rule is pinned exactly here; a small discrete-event simulation then checks that the rules
together settle where they should against a throttling and a slowing server, deterministically.
End-to-end behaviour against real loopback servers is in ``test_write_concurrency.py``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

import pytest

from mlsvc_discover._errors import ConfigError
from mlsvc_discover.config import parse_config
from mlsvc_discover.openmetadata._limiter import AdaptiveLimit, ConcurrencyLimiter, Signal


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(**kw: object) -> tuple[AdaptiveLimit, FakeClock]:
    clock = FakeClock()
    args: dict[str, object] = {"minimum": 1, "maximum": 16, "initial": 4, "clock": clock}
    args.update(kw)
    return AdaptiveLimit(**args), clock  # type: ignore[arg-type]


def full_round(limit: AdaptiveLimit, clock: FakeClock, latency: float, signal: Signal = "ok") -> None:
    """One round: as many writes as slots, all in flight at once, answered ``latency`` later."""
    n = limit.slots
    tickets = [limit.sent(i + 1) for i in range(n)]
    clock.now += latency
    for t in tickets:
        limit.answered(t, signal)


def test_slow_start_doubles_each_healthy_full_round_up_to_the_maximum() -> None:
    limit, clock = make()
    seen = [limit.slots]
    for _ in range(4):
        full_round(limit, clock, 0.05)
        seen.append(limit.slots)
    assert seen == [4, 8, 16, 16, 16]
    assert not limit.slow_start
    assert limit.decreases == 0


def test_a_round_that_did_not_fill_its_slots_does_not_raise_the_limit() -> None:
    limit, clock = make()
    for _ in range(3):
        tickets = [limit.sent(1) for _ in range(4)]  # one at a time: never all slots in use
        clock.now += 0.05
        for t in tickets:
            limit.answered(t, "ok")
    assert limit.slots == 4


def test_a_loss_in_slow_start_halves_the_limit_and_ends_slow_start() -> None:
    limit, clock = make(maximum=32)
    full_round(limit, clock, 0.05)  # 8
    full_round(limit, clock, 0.05)  # 16
    tickets = [limit.sent(i + 1) for i in range(16)]
    clock.now += 0.001
    limit.answered(tickets[0], "drop")
    assert limit.slots == 8
    assert not limit.slow_start
    assert limit.ceiling == 16
    for t in tickets[1:]:
        limit.answered(t, "drop")  # the same burst: no further cut
    assert limit.slots == 8


def test_only_one_reduction_per_round_trip_for_losses_of_writes_sent_before_it() -> None:
    limit, clock = make(initial=16)
    full_round(limit, clock, 0.05)
    tickets = [limit.sent(i + 1) for i in range(16)]
    clock.now += 0.001
    for t in tickets[:8]:  # eight 429s from the same burst
        limit.answered(t, "drop")
    assert limit.decreases == 1
    assert limit.limit == pytest.approx(14.4)  # 16 x 0.9 once, not 16 x 0.9^8


def test_after_slow_start_a_loss_multiplies_the_limit_by_the_backoff() -> None:
    limit, clock = make(initial=10)
    limit.slow_start = False
    t = limit.sent(10)
    clock.now += 0.001
    limit.answered(t, "drop")
    assert limit.limit == pytest.approx(9.0)


def test_growth_is_additive_then_slow_near_the_last_trouble_point() -> None:
    limit, clock = make(initial=8)
    limit.slow_start, limit.ceiling = False, 10.0  # as after a cut from 10
    full_round(limit, clock, 0.05)
    assert limit.limit == pytest.approx(9.0)  # more than one step below 10: +1
    full_round(limit, clock, 0.05)
    assert limit.limit == pytest.approx(9.125)  # within one step of 10: +1/8


def test_past_the_trouble_point_without_trouble_growth_is_additive_again() -> None:
    limit, clock = make(initial=12)
    limit.slow_start = False
    limit.ceiling = 10.0
    full_round(limit, clock, 0.05)
    assert limit.ceiling is None
    assert limit.limit == pytest.approx(13.0)


def test_one_slow_round_right_after_growth_backs_off() -> None:
    limit, clock = make(initial=8, maximum=16)
    full_round(limit, clock, 0.05)  # 8 -> 16 in slow start, reference 50 ms
    full_round(limit, clock, 0.10)  # latency doubled at 16: our extra writes did it
    assert limit.slots == 8
    assert limit.decreases == 1


def test_a_single_slow_round_at_a_steady_limit_is_not_congestion_but_two_are() -> None:
    limit, clock = make(initial=16)
    full_round(limit, clock, 0.05)
    full_round(limit, clock, 0.05)
    assert limit.slots == 16
    full_round(limit, clock, 0.20)  # the machine paused once
    assert limit.slots == 16
    full_round(limit, clock, 0.20)  # still slow: the server is slower
    assert limit.slots == 14


def test_the_reference_follows_a_server_that_gets_a_little_slower_for_good() -> None:
    limit, clock = make(initial=16)
    full_round(limit, clock, 0.05)
    for _ in range(20):
        full_round(limit, clock, 0.07)  # 1.4x: under the tolerance
    assert limit.decreases == 0
    assert limit.reference == pytest.approx(0.07, rel=0.02)


def test_a_latency_that_creeps_up_is_congestion_once_past_1_875_times_the_lowest() -> None:
    limit, clock = make(initial=16)
    full_round(limit, clock, 0.05)
    latency = 0.05
    while limit.decreases == 0 and latency < 1:
        latency *= 1.1  # each step well under the tolerance: the reference follows, up to a cap
        full_round(limit, clock, latency)
        full_round(limit, clock, latency)
    assert limit.decreases == 1
    assert 0.05 * 1.875 < latency <= 0.05 * 1.875 * 1.1


def test_fast_error_answers_do_not_count_as_the_servers_latency() -> None:
    limit, clock = make(initial=4)
    full_round(limit, clock, 0.001, "other")  # e.g. the missing bulk route's 500, answered at once
    assert limit.baseline is None
    full_round(limit, clock, 0.05)
    assert limit.baseline == pytest.approx(0.05)
    assert limit.decreases == 0


def test_the_limit_stays_within_its_bounds() -> None:
    limit, clock = make(minimum=3, maximum=6, initial=6)
    for _ in range(10):
        t = limit.sent(limit.slots)
        limit.answered(t, "drop")
    assert limit.slots == 3
    for _ in range(20):
        full_round(limit, clock, 0.05)
    assert limit.slots == 6


def test_equal_bounds_give_a_fixed_concurrency() -> None:
    limit, clock = make(minimum=8, maximum=8)
    assert limit.slots == 8
    t = limit.sent(8)
    limit.answered(t, "drop")
    full_round(limit, clock, 0.5)
    full_round(limit, clock, 0.5)
    assert limit.slots == 8


def test_initial_defaults_to_four_and_is_kept_within_the_bounds() -> None:
    assert make(initial=None)[0].slots == 4
    assert make(initial=None, maximum=2)[0].slots == 2
    assert make(initial=1, minimum=3)[0].slots == 3
    assert make(initial=99)[0].slots == 16


def test_after_an_idle_spell_the_next_write_starts_over_from_slow_start() -> None:
    limit, clock = make(idle_reset=30.0)
    full_round(limit, clock, 0.05)
    t = limit.sent(limit.slots)
    limit.answered(t, "drop")
    assert not limit.slow_start
    clock.now += 31
    limit.sent(1)
    assert limit.slow_start
    assert limit.slots == 4
    assert limit.baseline is None


def test_min_concurrency_above_max_is_a_config_error_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"min_concurrency \(9\) is above max_concurrency \(8\)"):
        parse_config({"openmetadata": {"max_concurrency": 8, "min_concurrency": 9}}, env={})


# --- the rules together, in a deterministic simulation ---------------------------------------


@dataclass
class Simulation:
    """Writes through an AdaptiveLimit against a server model, on a fake clock (no asyncio)."""

    n: int
    latency: float
    capacity: int
    over: str  # "throttle" (429 + Retry-After 1 s) or "slow" (2 x latency when over capacity)
    limit: AdaptiveLimit = field(init=False)
    clock: FakeClock = field(default_factory=FakeClock)
    drops: int = 0
    limits: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limit = AdaptiveLimit(minimum=1, maximum=16, clock=self.clock)

    def run(self) -> float:
        seq = itertools.count()
        events: list[tuple[float, int, str, object]] = []
        queue = list(range(self.n))
        retry: list[int] = []
        in_flight = 0  # slots held
        at_server = 0
        done = 0
        while done < self.n:
            while (retry or queue) and in_flight < self.limit.slots:
                item = retry.pop(0) if retry else queue.pop(0)
                in_flight += 1
                ticket = self.limit.sent(in_flight)
                if self.over == "throttle" and at_server >= self.capacity:
                    heapq.heappush(events, (self.clock.now + 0.001, next(seq), "drop", (item, ticket)))
                    continue
                at_server += 1
                slow = self.over == "slow" and at_server > self.capacity
                took = self.latency * (2 if slow else 1)
                heapq.heappush(events, (self.clock.now + took, next(seq), "ok", (item, ticket)))
            when, _, kind, payload = heapq.heappop(events)
            self.clock.now = when
            item, ticket = payload  # type: ignore[misc]
            if kind == "retry":
                retry.append(item)
                continue
            in_flight -= 1
            if kind == "drop":
                self.drops += 1
                self.limit.answered(ticket, "drop")
                heapq.heappush(events, (self.clock.now + 1.0, next(seq), "retry", (item, None)))
            else:
                at_server -= 1
                done += 1
                self.limit.answered(ticket, "ok")
            self.limits.append(self.limit.limit)
        return self.clock.now


def test_simulated_server_that_answers_429_beyond_8_gets_about_8_and_few_429s() -> None:
    sim = Simulation(n=5000, latency=0.05, capacity=8, over="throttle")
    wall = sim.run()
    floor = 5000 * 0.05 / 8
    late = sim.limits[len(sim.limits) // 2 :]
    assert min(late) >= 7
    assert max(late) < 10
    assert wall <= 1.15 * floor
    assert sim.drops < 5000 * 0.05  # under 5% of the writes ever see a 429


def test_simulated_server_whose_latency_doubles_beyond_8_settles_near_8() -> None:
    sim = Simulation(n=5000, latency=0.05, capacity=8, over="slow")
    wall = sim.run()
    late = sorted(sim.limits[len(sim.limits) // 2 :])
    assert 7 <= late[len(late) // 2] < 10
    assert wall <= 1.25 * 5000 * 0.05 / 8


def test_simulated_healthy_server_gets_the_full_concurrency_within_a_few_round_trips() -> None:
    sim = Simulation(n=5000, latency=0.05, capacity=10**6, over="slow")
    wall = sim.run()
    assert sim.limit.slots == 16
    assert sim.limit.decreases == 0
    assert wall <= 1.02 * 5000 * 0.05 / 16 + 3 * 0.05


# --- asyncio slots ---------------------------------------------------------------------------


def fixed(n: int) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(AdaptiveLimit(minimum=n, maximum=n))


def test_no_more_writes_hold_a_slot_than_the_limit_allows() -> None:
    limiter = fixed(3)
    peak = 0

    async def write() -> None:
        nonlocal peak
        async with limiter.slot():
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.001)

    async def main() -> None:
        await asyncio.gather(*(write() for _ in range(30)))

    asyncio.run(main())
    assert peak == 3
    assert limiter.in_flight == 0


def test_a_write_waiting_out_retry_after_lends_its_slot_and_gets_it_back_first() -> None:
    limiter = fixed(1)
    order: list[str] = []

    async def retried() -> None:
        async with limiter.slot() as slot:
            order.append("first try")
            await slot.outside(asyncio.sleep(0.02))  # others may use the slot meanwhile
            order.append("retry")

    async def other(name: str) -> None:
        async with limiter.slot():
            order.append(name)
            await asyncio.sleep(0.05)

    async def main() -> None:
        first = asyncio.create_task(retried())
        await asyncio.sleep(0)
        await asyncio.gather(first, other("a"), other("b"), other("c"))

    asyncio.run(main())
    # "a" ran during the pause; the retry came back ahead of "b" and "c", queued before it.
    assert order == ["first try", "a", "retry", "b", "c"]
    assert limiter.in_flight == 0


def test_a_cancelled_write_does_not_keep_a_slot() -> None:
    limiter = fixed(1)

    async def main() -> None:
        async with limiter.slot():
            queued = asyncio.create_task(limiter.slot().__aenter__())
            await asyncio.sleep(0)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
        assert limiter.in_flight == 0

        async def pausing() -> None:
            async with limiter.slot() as slot:
                await slot.outside(asyncio.sleep(10))

        task = asyncio.create_task(pausing())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert limiter.in_flight == 0
        async with limiter.slot():
            assert limiter.in_flight == 1

    asyncio.run(main())


def test_a_grown_limit_lets_queued_writes_in_at_once() -> None:
    limit = AdaptiveLimit(minimum=1, maximum=8, initial=2)
    limiter = ConcurrencyLimiter(limit)
    started: list[int] = []

    async def write(i: int) -> None:
        async with limiter.slot() as slot:
            started.append(limiter.in_flight)
            slot.sent()
            await asyncio.sleep(0.01)
            slot.answered(201)

    async def main() -> None:
        await asyncio.gather(*(write(i) for i in range(20)))

    asyncio.run(main())
    assert max(started) >= 4  # slow start doubled the slots mid-run
