"""The Happy Eyeballs schedule (sockit.proto.happy_eyeballs) on its own, without sockets.

Step-by-step tables (what the schedule answers after each event), then scenarios run
by a tiny driver with a virtual clock that plays scripted attempt outcomes, asserting
exact start times: the same timings tests/sync/test_happy_eyeballs.py asserts through
the sync connect(), and the async connect drives this very schedule.
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass

import pytest

from sockit.errors import ConnectAttempt
from sockit.proto.happy_eyeballs import (
    DEFAULT_HAPPY_EYEBALLS_DELAY,
    GiveUp,
    HappyEyeballs,
    StartAttempt,
    Step,
    WaitForAttempts,
    check_happy_eyeballs_delay,
)

ADDRESSES = ["[2001:db8::1]:80", "192.0.2.1:80", "[2001:db8::2]:80"]


def _refused() -> OSError:
    return OSError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))


def _wait_of(step: Step) -> float | None:
    assert isinstance(step, WaitForAttempts), step
    return step.timeout


def test_default_delay_is_rfc_8305s() -> None:
    assert DEFAULT_HAPPY_EYEBALLS_DELAY == 0.25


# --- step by step ---------------------------------------------------------------------


def test_first_attempt_starts_at_once_then_waits_for_the_delay() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=0.25, start=10.0)
    assert schedule.next_step(10.0) == StartAttempt(0)
    schedule.attempt_started(0, 10.0)
    assert schedule.next_step(10.0) == WaitForAttempts(0.25)
    assert _wait_of(schedule.next_step(10.1)) == pytest.approx(0.15)
    assert schedule.next_step(10.25) == StartAttempt(1)
    schedule.attempt_started(1, 10.25)
    assert schedule.in_flight == {0, 1}


def test_a_failure_with_nothing_in_flight_starts_the_next_at_once() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=0.25, start=0.0)
    assert schedule.next_step(0.0) == StartAttempt(0)
    schedule.attempt_started(0, 0.0)
    schedule.attempt_failed(0, _refused(), 0.1)
    assert schedule.in_flight == frozenset()
    assert schedule.next_step(0.1) == StartAttempt(1)


def test_a_failure_while_another_is_in_flight_starts_the_next_at_once() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=0.25, start=0.0)
    for index, at in ((0, 0.0), (1, 0.25)):
        assert schedule.next_step(at) == StartAttempt(index)
        schedule.attempt_started(index, at)
    assert _wait_of(schedule.next_step(0.3)) == pytest.approx(0.2)
    schedule.attempt_failed(0, _refused(), 0.3)
    assert schedule.next_step(0.3) == StartAttempt(2)


def test_an_attempt_that_fails_to_start_is_recorded_and_the_next_starts() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=0.25, start=0.0)
    assert schedule.next_step(0.0) == StartAttempt(0)
    unreachable = OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
    schedule.attempt_failed(0, unreachable, 0.0)
    assert schedule.next_step(0.0) == StartAttempt(1)
    assert schedule.failures == [ConnectAttempt("[2001:db8::1]:80", unreachable, 0.0)]
    assert schedule.last_error is unreachable


def test_after_the_last_start_it_waits_without_limit() -> None:
    schedule = HappyEyeballs(ADDRESSES[:1], delay=0.25, start=0.0)
    assert schedule.next_step(0.0) == StartAttempt(0)
    schedule.attempt_started(0, 0.0)
    assert schedule.next_step(5.0) == WaitForAttempts(None)


def test_all_failed_gives_up_naming_every_attempt_in_order() -> None:
    schedule = HappyEyeballs(ADDRESSES[:2], delay=0.25, start=1.0)
    errors = [_refused(), _refused()]
    assert schedule.next_step(1.0) == StartAttempt(0)
    schedule.attempt_started(0, 1.0)
    schedule.attempt_failed(0, errors[0], 1.01)
    assert schedule.next_step(1.01) == StartAttempt(1)
    schedule.attempt_started(1, 1.01)
    schedule.attempt_failed(1, errors[1], 1.02)
    assert schedule.next_step(1.02) == GiveUp(timed_out=False)
    assert [(f.address, f.error, round(f.elapsed, 6)) for f in schedule.failures] == [
        ("[2001:db8::1]:80", errors[0], 0.01),
        ("192.0.2.1:80", errors[1], 0.02),
    ]
    assert schedule.last_error is errors[1]


def test_no_addresses_gives_up_at_once() -> None:
    schedule = HappyEyeballs([], delay=0.25, start=0.0)
    assert schedule.next_step(0.0) == GiveUp(timed_out=False)
    assert schedule.failures == []
    assert schedule.last_error is None


def test_the_deadline_caps_every_wait_and_then_gives_up() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=0.25, start=0.0, timeout=0.1)
    assert schedule.next_step(0.0) == StartAttempt(0)
    schedule.attempt_started(0, 0.0)
    assert schedule.next_step(0.0) == WaitForAttempts(0.1)
    assert schedule.next_step(0.1) == GiveUp(timed_out=True)
    # The deadline wins even over an attempt that is due.
    assert schedule.next_step(0.3) == GiveUp(timed_out=True)


def test_the_deadline_caps_the_wait_after_the_last_start() -> None:
    schedule = HappyEyeballs(ADDRESSES[:1], delay=None, start=0.0, timeout=2.0)
    assert schedule.next_step(0.0) == StartAttempt(0)
    schedule.attempt_started(0, 0.0)
    assert schedule.next_step(0.5) == WaitForAttempts(1.5)


def test_a_late_wake_up_never_asks_for_a_negative_wait() -> None:
    schedule = HappyEyeballs(ADDRESSES[:1], delay=0.25, start=0.0, timeout=1.0)
    assert schedule.next_step(0.0) == StartAttempt(0)
    schedule.attempt_started(0, 0.0)
    step = schedule.next_step(0.999999)
    assert isinstance(step, WaitForAttempts)
    assert step.timeout is not None
    assert step.timeout >= 0.0


def test_no_delay_means_one_attempt_at_a_time() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=None, start=0.0)
    assert schedule.next_step(0.0) == StartAttempt(0)
    schedule.attempt_started(0, 0.0)
    assert schedule.next_step(100.0) == WaitForAttempts(None)
    schedule.attempt_failed(0, _refused(), 100.0)
    assert schedule.next_step(100.0) == StartAttempt(1)


def test_zero_delay_starts_everything_at_once() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=0.0, start=0.0)
    for index in range(len(ADDRESSES)):
        assert schedule.next_step(0.0) == StartAttempt(index)
        schedule.attempt_started(index, 0.0)
    assert schedule.next_step(0.0) == WaitForAttempts(None)


def test_views_are_copies() -> None:
    schedule = HappyEyeballs(ADDRESSES, delay=0.25, start=0.0)
    schedule.next_step(0.0)
    schedule.attempt_failed(0, _refused(), 0.0)
    schedule.failures.clear()
    assert len(schedule.failures) == 1


@pytest.mark.parametrize("delay", [-0.001, -1.0, math.nan, -math.inf])
def test_bad_delays_are_value_errors(delay: float) -> None:
    with pytest.raises(ValueError, match="happy_eyeballs_delay must be >= 0 or None"):
        check_happy_eyeballs_delay(delay)
    with pytest.raises(ValueError, match="happy_eyeballs_delay"):
        HappyEyeballs(ADDRESSES, delay=delay, start=0.0)


@pytest.mark.parametrize("delay", [None, 0.0, 0.25, 3, math.inf])
def test_good_delays_pass_through(delay: float | None) -> None:
    assert check_happy_eyeballs_delay(delay) == delay


@pytest.mark.parametrize("timeout", [-0.5, math.nan])
def test_bad_timeouts_are_value_errors(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        HappyEyeballs(ADDRESSES, delay=0.25, start=0.0, timeout=timeout)


# --- scenarios on a virtual clock -----------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How an attempt ends: ``after`` seconds after its start (``None``: never), with
    success or an error; ``at_once`` fails when it is started."""

    after: float | None = None
    ok: bool = False
    at_once: bool = False


HANG = Outcome()


@dataclass
class Result:
    starts: list[tuple[int, float]]
    winner: int | None
    gave_up: GiveUp | None
    now: float


def drive(
    outcomes: list[Outcome], *, delay: float | None, timeout: float | None = None
) -> tuple[Result, HappyEyeballs]:
    """Play ``outcomes`` through a schedule, like sync connect() does with a fake clock."""
    schedule = HappyEyeballs(
        [f"192.0.2.{index}:80" for index in range(len(outcomes))],
        delay=delay,
        start=0.0,
        timeout=timeout,
    )
    now = 0.0
    starts: list[tuple[int, float]] = []
    completes: dict[int, float] = {}
    for _ in range(100):  # bounded: each round starts, fails or finishes something
        step: Step = schedule.next_step(now)
        if isinstance(step, StartAttempt):
            starts.append((step.index, round(now, 6)))
            outcome = outcomes[step.index]
            if outcome.at_once:
                schedule.attempt_failed(step.index, _refused(), now)
                continue
            schedule.attempt_started(step.index, now)
            if outcome.after is not None:
                completes[step.index] = now + outcome.after
            continue
        if isinstance(step, GiveUp):
            return Result(starts, None, step, round(now, 6)), schedule
        in_flight = sorted(schedule.in_flight)
        times = [completes[index] for index in in_flight if index in completes]
        candidates = [*times, *([] if step.timeout is None else [now + step.timeout])]
        assert candidates, "the schedule asked to wait forever on attempts that never end"
        now = max(now, min(candidates))
        for index in in_flight:
            if completes.get(index, math.inf) <= now:
                if outcomes[index].ok:
                    return Result(starts, index, None, round(now, 6)), schedule
                del completes[index]
                schedule.attempt_failed(index, _refused(), now)
    raise AssertionError("the schedule did not finish")


@pytest.mark.parametrize(
    ("outcomes", "delay", "timeout", "starts", "winner", "end"),
    [
        pytest.param([Outcome(0.1, ok=True)], 0.25, None, [(0, 0.0)], 0, 0.1, id="single"),
        pytest.param(
            [HANG, Outcome(0.05, ok=True)],
            0.25,
            None,
            [(0, 0.0), (1, 0.25)],
            1,
            0.3,
            id="black-hole-then-delay",
        ),
        pytest.param(
            [Outcome(0.1), Outcome(0.02, ok=True)],
            0.25,
            None,
            [(0, 0.0), (1, 0.1)],
            1,
            0.12,
            id="failure-starts-next-at-once",
        ),
        pytest.param(
            [Outcome(at_once=True), Outcome(0.01, ok=True)],
            0.25,
            None,
            [(0, 0.0), (1, 0.0)],
            1,
            0.01,
            id="immediate-failure",
        ),
        pytest.param(
            [HANG, HANG, HANG, Outcome(0.0, ok=True)],
            0.25,
            None,
            [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75)],
            3,
            0.75,
            id="staggered",
        ),
        pytest.param(
            [Outcome(0.4, ok=True), Outcome(0.05, ok=True)],
            0.25,
            None,
            [(0, 0.0), (1, 0.25)],
            1,
            0.3,
            id="first-to-complete-wins",
        ),
        pytest.param(
            [Outcome(1.0), Outcome(0.5, ok=True)],
            0.1,
            None,
            [(0, 0.0), (1, 0.1)],
            1,
            0.6,
            id="custom-delay",
        ),
        pytest.param(
            [Outcome(1.0), Outcome(0.5, ok=True)],
            None,
            None,
            [(0, 0.0), (1, 1.0)],
            1,
            1.5,
            id="sequential",
        ),
        pytest.param(
            [HANG, HANG, HANG],
            0.25,
            0.6,
            [(0, 0.0), (1, 0.25), (2, 0.5)],
            None,
            0.6,
            id="timeout",
        ),
        pytest.param(
            [Outcome(0.01), Outcome(0.01)],
            0.25,
            None,
            [(0, 0.0), (1, 0.01)],
            None,
            0.02,
            id="all-fail",
        ),
    ],
)
def test_scenarios(
    outcomes: list[Outcome],
    delay: float | None,
    timeout: float | None,
    starts: list[tuple[int, float]],
    winner: int | None,
    end: float,
) -> None:
    result, schedule = drive(outcomes, delay=delay, timeout=timeout)
    assert result.starts == starts
    assert result.winner == winner
    assert result.now == pytest.approx(end)
    if winner is None:
        assert result.gave_up == GiveUp(timed_out=timeout is not None)
        failed = len(starts) if timeout is None else 0
        assert len(schedule.failures) == failed


def test_all_fail_reports_elapsed_times_from_the_start() -> None:
    _, schedule = drive([Outcome(0.01), Outcome(0.01)], delay=0.25)
    assert [round(f.elapsed, 6) for f in schedule.failures] == [0.01, 0.02]
    assert [f.address for f in schedule.failures] == ["192.0.2.0:80", "192.0.2.1:80"]
