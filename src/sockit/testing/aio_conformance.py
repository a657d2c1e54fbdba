"""Async conformance suites: every async stream implementation must pass them.

:func:`check_async_stream` and :func:`check_async_half_closeable_stream` are the twins
of :mod:`sockit.testing.conformance`: the same checks, one contract of
:mod:`sockit.abc` at a time, awaited. They take an async function that makes a fresh
connected pair of :class:`~sockit.abc.AsyncStream` objects and check byte-exact data
both ways (also 1 MiB each way at once), ``recv`` sizes, EOF if and only if the peer
ended its side, the message helpers' EOF errors, limits that keep the bytes, timeouts
that raise ``TimeoutError`` and keep the bytes, default and per-call timeouts,
idempotent ``aclose``, use after close, the async context manager, and for
half-closeable streams ``send_eof`` with the half-close "oracle" (the peer answers with
a digest of everything it received after it saw EOF).

The first violation raises :class:`AssertionError` naming the check, the direction and
what was expected; an unexpected exception is a violation too (chained as the cause).

Every check makes its own pair and closes both ends, whatever happens. Concurrent sends
and receives run in tasks that are always awaited (or cancelled, then awaited) before
the check ends; every call carries a timeout (:data:`PATIENCE` when it should succeed),
a watchdog task unblocks a call that ignores its timeout, and every loop is bounded in
count and time. The suite runs on whatever loop runs it (asyncio, uvloop).

This module must never open a network connection of its own, start a thread, or
depend on pytest: it only uses the streams it is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from sockit.abc import AsyncHalfCloseableStream, AsyncStream
from sockit.errors import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    IncompleteRead,
    LimitExceeded,
)
from sockit.testing.conformance import MIN_BUFFER, PATIENCE, SHORT_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Sequence
    from types import TracebackType

__all__ = [
    "MIN_BUFFER",
    "PATIENCE",
    "SHORT_TIMEOUT",
    "check_async_half_closeable_stream",
    "check_async_stream",
]

_BULK_SIZE = 1 << 20
# Large enough that no socket buffer can take it at once (see the sync suite).
_CLOGGING_SIZE = 32 << 20
# The first send to a closed TCP peer succeeds (the peer answers with a reset), the
# next ones fail; bounded in tries and time.
_BROKEN_PEER_TRIES = 1000
_BROKEN_PEER_PAUSE = 0.01
# How long a call expected to time out may block before the suite unblocks it.
_WATCHDOG_DELAY = PATIENCE / 2
# What the watchdog sends to end a receive that ignores its timeout: completes a line,
# a CRLF message and any recv_exactly of up to 128 bytes.
_UNBLOCKING_DATA = b"\r\n" * 64
# How long the end of a check waits for its tasks before cancelling them.
_TASK_PATIENCE = PATIENCE + 5.0

_S = TypeVar("_S", bound=AsyncStream)
_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseException)


# --- failure reporting ----------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise AssertionError(message)


def _expect(condition: bool, message: str) -> None:  # noqa: FBT001
    if not condition:
        _fail(message)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _expect_equal(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        _fail(f"{what}: expected {_short(expected)}, got {_short(actual)}")


async def _expect_raises(
    expected: type[_E], call: Callable[[], Awaitable[object]], what: str
) -> _E:
    """Await ``call()`` and return the exception it raised, which must be ``expected``."""
    try:
        result = await call()
    except expected as error:
        return error
    except AssertionError:
        raise
    except Exception as error:
        raise AssertionError(
            f"{what}: expected {expected.__name__}, got {type(error).__name__}: {error}"
        ) from error
    _fail(f"{what}: expected {expected.__name__}, but it returned {_short(result)}")


async def _value_of(awaitable: Awaitable[object]) -> object:
    """What ``awaitable`` returns, typed as a value (a None-returning call included)."""
    return await awaitable


def _first_difference(actual: bytes, expected: bytes) -> str:
    for index, (left, right) in enumerate(zip(actual, expected, strict=False)):
        if left != right:
            return f"first difference at byte {index}"
    return f"{len(actual)} bytes instead of {len(expected)}"


def _expect_same_bytes(actual: bytes, expected: bytes, what: str) -> None:
    if actual != expected:
        _fail(f"{what}: data differs, {_first_difference(actual, expected)}")


# --- tasks that are always awaited ----------------------------------------------------


class _AsyncPair(Generic[_S]):
    """One check's pair of streams plus its tasks; closes and awaits all on exit."""

    def __init__(self, first: _S, second: _S, labels: tuple[str, str]) -> None:
        self.first = first
        self.second = second
        self.labels = labels
        self._tasks: list[tuple[str, asyncio.Task[Any]]] = []

    def peer_of(self, stream: AsyncStream) -> _S:
        """The other stream of the pair."""
        return self.second if stream is self.first else self.first

    def start(self, name: str, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run ``coroutine`` in a task that is awaited when the check ends."""
        task = asyncio.get_running_loop().create_task(coroutine, name=f"sockit-check-{name}")
        self._tasks.append((name, task))
        return task

    async def result(self, task: asyncio.Task[_T]) -> _T:
        """Wait (at most a bounded time) for ``task`` and return its result; what it
        raised is raised as an :class:`AssertionError` naming it."""
        name = next((label for label, known in self._tasks if known is task), task.get_name())
        done, _ = await asyncio.wait({task}, timeout=_TASK_PATIENCE)
        if not done:
            _fail(f"{name} did not finish within {_TASK_PATIENCE:.0f} s (hung?)")
        if task.cancelled():
            _fail(f"{name} was cancelled")
        error = task.exception()
        if error is not None:
            if isinstance(error, AssertionError):
                raise AssertionError(f"{name}: {error}") from error
            raise AssertionError(f"{name} raised {type(error).__name__}: {error}") from error
        return task.result()

    async def __aenter__(self) -> _AsyncPair[_S]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A task that failed before the cleanup usually explains why the check failed
        # (it waited for data the task never sent): report that error instead. Errors
        # after the cleanup are consequences of closing the streams.
        failed_first = [
            task
            for _, task in self._tasks
            if task.done() and not task.cancelled() and task.exception()
        ]
        close_errors: list[str] = []
        for label, stream in zip(self.labels, (self.first, self.second), strict=True):
            try:
                await asyncio.wait_for(stream.aclose(), PATIENCE)
            except Exception as error:  # noqa: BLE001 - reported below
                close_errors.append(f"{label}.aclose() raised {type(error).__name__}: {error}")
        tasks = [task for _, task in self._tasks]
        hung: list[str] = []
        if tasks:
            # Every call in a task has a timeout of at most PATIENCE, and closing the
            # streams wakes most of them at once; what is left after that is hung.
            _, pending = await asyncio.wait(tasks, timeout=_TASK_PATIENCE)
            hung = [name for name, task in self._tasks if task in pending]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=PATIENCE)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the loop must not log it as forgotten
        if exc_type is not None:
            if failed_first:
                await self.result(failed_first[0])
            return
        if close_errors:
            _fail("; ".join(close_errors))
        if hung:
            _fail(f"tasks still running after the check: {', '.join(hung)}")


def _failed(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


# --- the runner -----------------------------------------------------------------------


async def _run_checks(
    make_pair: Callable[[], Awaitable[tuple[_S, _S]]],
    checks: Sequence[tuple[str, Callable[[_AsyncPair[_S]], Awaitable[None]], bool]],
    kind: type,
) -> None:
    for description, check, both_orientations in checks:
        orientations = (False, True) if both_orientations else (False,)
        for flipped in orientations:
            first, second = await make_pair()
            labels = ("second", "first") if flipped else ("first", "second")
            if flipped:
                first, second = second, first
            direction = f" ({labels[0]} -> {labels[1]})" if both_orientations else ""
            name = f"{description}{direction}"
            try:
                async with _AsyncPair(first, second, labels) as pair:
                    for label, stream in zip(labels, (first, second), strict=True):
                        _expect(
                            isinstance(stream, kind),
                            f"the {label} stream is a {type(stream).__name__}, "
                            f"not a {kind.__name__}",
                        )
                    await check(pair)
            except AssertionError as error:
                raise AssertionError(f"[{name}] {error}") from error
            except Exception as error:
                raise AssertionError(
                    f"[{name}] unexpected {type(error).__name__}: {error}"
                ) from error


async def check_async_stream(
    make_pair: Callable[[], Awaitable[tuple[AsyncStream, AsyncStream]]],
) -> None:
    """Check the :class:`sockit.abc.AsyncStream` contract on the pairs ``make_pair()``
    returns.

    Raises :class:`AssertionError` describing the first violation.

    ``make_pair`` is an async function called once per check (and once more per
    direction for the one-way checks); it must return two freshly connected streams,
    which the suite closes. Each direction must buffer at least :data:`MIN_BUFFER`
    bytes that nobody reads yet; larger transfers run in tasks. The checks of the
    ``timeout`` attribute run only if the streams have one. Takes a few seconds:
    several checks wait for :data:`SHORT_TIMEOUT` on purpose.
    """
    await _run_checks(make_pair, _STREAM_CHECKS, AsyncStream)


async def check_async_half_closeable_stream(
    make_pair: Callable[[], Awaitable[tuple[AsyncHalfCloseableStream, AsyncHalfCloseableStream]]],
) -> None:
    """Run :func:`check_async_stream`, then check the
    :class:`sockit.abc.AsyncHalfCloseableStream` part.

    That is: ``send_eof`` is idempotent, forbids further sends, shows the peer EOF
    after every byte sent before it, and leaves the other direction working (the
    half-close oracle, in both directions). Raises :class:`AssertionError` describing
    the first violation.
    """
    await check_async_stream(make_pair)
    await _run_checks(make_pair, _HALF_CLOSE_CHECKS, AsyncHalfCloseableStream)


# --- helpers for the checks -----------------------------------------------------------


def _payload(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes (the sync suite's generator)."""
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not a secret


async def _send_in_pieces(
    stream: AsyncStream, data: bytes, seed: int, *, max_piece: int = 16384
) -> None:
    rng = random.Random(seed)  # noqa: S311 - sizes for a test, not a secret
    view = memoryview(data)
    position = 0
    while position < len(data):
        size = rng.randint(1, max_piece)
        await stream.sendall(view[position : position + size], timeout=PATIENCE)
        position += size


async def _recv_exactly_with_recv(stream: AsyncStream, size: int, what: str, seed: int) -> bytes:
    """Receive ``size`` bytes with plain ``recv`` of random sizes, checking each size."""
    rng = random.Random(seed)  # noqa: S311 - sizes for a test, not a secret
    received = bytearray()
    # Every successful recv returns at least one byte, so size iterations suffice.
    for _ in range(size):
        if len(received) >= size:
            break
        max_bytes = rng.randint(1, 65536)
        chunk = await stream.recv(max_bytes, timeout=PATIENCE)
        if not chunk:
            _fail(f"{what}: recv returned EOF after {len(received)} of {size} bytes")
        _expect(len(chunk) <= max_bytes, f"{what}: recv({max_bytes}) returned {len(chunk)} bytes")
        received += chunk
    return bytes(received)


async def _recv_until_eof(stream: AsyncStream, limit: int, what: str) -> bytes:
    """Receive with ``recv`` until EOF; more than ``limit`` bytes is a violation."""
    received = bytearray()
    for _ in range(limit + 1):
        chunk = await stream.recv(65536, timeout=PATIENCE)
        if not chunk:
            return bytes(received)
        received += chunk
        _expect(len(received) <= limit, f"{what}: more than {limit} bytes before EOF")
    _fail(f"{what}: no EOF after {limit + 1} receives")


async def _expect_timeout(
    pair: _AsyncPair[Any],
    call: Callable[[], Awaitable[object]],
    what: str,
    *,
    unblock: Callable[[], Awaitable[object]],
    within: float = _WATCHDOG_DELAY,
) -> None:
    """Expect ``call`` to raise ``TimeoutError`` in less than ``within`` seconds.

    A stream that ignores its timeout would block the check forever, so a watchdog
    task runs ``unblock`` (send the blocked receiver some data, or drain the blocked
    sender's peer) after :data:`_WATCHDOG_DELAY` seconds: the call then returns and the
    check fails with a message instead of hanging.
    """
    finished = asyncio.Event()

    async def watchdog() -> None:
        try:
            await asyncio.wait_for(finished.wait(), _WATCHDOG_DELAY)
        except TimeoutError:
            pass
        else:
            return
        # Only there to end a hung call; whether it works is not what is checked.
        try:
            await unblock()
        except Exception:  # noqa: BLE001, S110 - see above
            pass

    pair.start(f"watchdog of {what}", watchdog())
    started = time.monotonic()
    try:
        await _expect_raises(TimeoutError, call, what)
    except AssertionError as error:
        elapsed = time.monotonic() - started
        if elapsed < _WATCHDOG_DELAY:
            raise
        raise AssertionError(
            f"{error} after {elapsed:.1f} s (the call ignored its timeout; the suite unblocked it)"
        ) from error
    finally:
        finished.set()
    elapsed = time.monotonic() - started
    _expect(elapsed < within, f"{what}: the timeout took {elapsed:.2f} s (limit {within} s)")


async def _expect_recv_timeout(
    pair: _AsyncPair[Any], receiver: AsyncStream, call: Callable[[], Awaitable[object]], what: str
) -> None:
    """:func:`_expect_timeout` for a receive on ``receiver``: the watchdog sends."""
    peer = pair.peer_of(receiver)
    await _expect_timeout(
        pair, call, what, unblock=lambda: peer.sendall(_UNBLOCKING_DATA, timeout=PATIENCE)
    )


async def _expect_send_timeout(
    pair: _AsyncPair[Any], sender: AsyncStream, call: Callable[[], Awaitable[object]], what: str
) -> None:
    """:func:`_expect_timeout` for a send on ``sender``: the watchdog drains the peer."""
    peer = pair.peer_of(sender)

    async def drain() -> None:
        for _ in range(_CLOGGING_SIZE):
            if not await peer.recv(1 << 20, timeout=PATIENCE):
                return

    await _expect_timeout(pair, call, what, unblock=drain)


async def _expect_eof(stream: AsyncStream, what: str) -> None:
    _expect_equal(await stream.recv(65536, timeout=PATIENCE), b"", f"{what}: recv() at EOF")


async def _expect_broken_eventually(stream: AsyncStream, what: str) -> None:
    """Send until the stream reports the dead peer; bounded in tries and time."""
    deadline = time.monotonic() + _WATCHDOG_DELAY
    for _ in range(_BROKEN_PEER_TRIES):
        try:
            await stream.sendall(b"x" * 1024, timeout=PATIENCE)
        except (BrokenResourceError, ConnectionError):
            return
        except ClosedResourceError as error:
            raise AssertionError(
                f"{what}: sendall to a closed peer raised ClosedResourceError, which means "
                "'closed by you'; expected BrokenResourceError"
            ) from error
        if time.monotonic() > deadline:
            break
        # Not synchronisation: a reset travels asynchronously (TCP answers the first
        # send with an RST), so give it a moment before the next try.
        await asyncio.sleep(_BROKEN_PEER_PAUSE)
    _fail(f"{what}: sendall kept succeeding after the peer closed")


# --- Stream checks --------------------------------------------------------------------


async def _check_simple_exchange(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    _expect_equal(
        await _value_of(a.sendall(b"x", timeout=PATIENCE)), None, "sendall(b'x') return value"
    )
    _expect_equal(await b.recv(1, timeout=PATIENCE), b"x", "recv(1) after sendall(b'x')")
    await b.sendall(bytearray(b"yz"), timeout=PATIENCE)
    _expect_equal(await a.recv_exactly(2, timeout=PATIENCE), b"yz", "sendall(bytearray) then back")
    await a.sendall(memoryview(b"0123456789")[2:5], timeout=PATIENCE)
    _expect_equal(await b.recv_exactly(3, timeout=PATIENCE), b"234", "sendall(memoryview slice)")
    # An empty send is no message and no EOF: nothing arrives.
    await a.sendall(b"", timeout=PATIENCE)
    await _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv(timeout=SHORT_TIMEOUT),
        "recv after the peer's sendall(b'') (an empty send must not look like EOF)",
    )
    await a.sendall(b"after", timeout=PATIENCE)
    _expect_equal(await b.recv_exactly(5, timeout=PATIENCE), b"after", "data after an empty send")


async def _check_recv_max_bytes(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    data = _payload(4096, seed=1)
    # In a task: the stream need not buffer 4 KiB without a reader.
    sender = pair.start(f"{pair.labels[0]}.sendall(4 KiB)", a.sendall(data, timeout=PATIENCE))
    received = bytearray()
    sizes = (1, 2, 7, 100, 1000, 65536)
    for index in range(len(data)):
        if len(received) >= len(data):
            break
        max_bytes = sizes[index % len(sizes)]
        chunk = await b.recv(max_bytes, timeout=PATIENCE)
        _expect(
            1 <= len(chunk) <= max_bytes,
            f"recv({max_bytes}) returned {len(chunk)} bytes before EOF (must be 1..{max_bytes})",
        )
        received += chunk
    await pair.result(sender)
    _expect_same_bytes(bytes(received), data, "4096 bytes received with recv of varying sizes")


async def _check_bulk_both_directions(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    forward = _payload(_BULK_SIZE, seed=2)
    backward = _payload(_BULK_SIZE, seed=3)
    senders = [
        pair.start("first.sendall(1 MiB)", _send_in_pieces(a, forward, seed=4)),
        pair.start("second.sendall(1 MiB)", _send_in_pieces(b, backward, seed=5)),
    ]
    by_recv = pair.start(
        "second.recv(1 MiB)", _recv_exactly_with_recv(b, _BULK_SIZE, "second.recv", seed=6)
    )
    by_exactly = pair.start(
        "first.recv_exactly(1 MiB)", a.recv_exactly(_BULK_SIZE, timeout=PATIENCE)
    )
    for sender in senders:
        await pair.result(sender)
    received_forward = await pair.result(by_recv)
    received_backward = await pair.result(by_exactly)
    _expect_same_bytes(received_forward, forward, f"1 MiB {pair.labels[0]} -> {pair.labels[1]}")
    _expect_same_bytes(received_backward, backward, f"1 MiB {pair.labels[1]} -> {pair.labels[0]}")


async def _check_eof_after_close(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    await a.sendall(b"last words", timeout=PATIENCE)
    await a.aclose()
    received = await _recv_until_eof(b, 10, "recv after the peer sent 10 bytes and closed")
    _expect_same_bytes(received, b"last words", "data sent before close")
    for attempt in range(3):
        await _expect_eof(b, f"recv number {attempt + 2} after EOF (EOF must repeat)")
    error = await _expect_raises(
        EndOfStream, lambda: b.recv_exactly(1, timeout=PATIENCE), "recv_exactly(1) at EOF"
    )
    _expect(not isinstance(error, IncompleteRead), "recv_exactly(1) at a clean EOF")
    for attempt in range(2):
        await _expect_raises(
            EndOfStream,
            lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
            f"recv_until at EOF (call {attempt + 1})",
        )
        await _expect_raises(
            EndOfStream,
            lambda: b.recv_line(timeout=PATIENCE),
            f"recv_line at EOF (call {attempt + 1})",
        )
    await _expect_eof(b, "recv after the message helpers saw EOF")


async def _check_recv_exactly(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    await a.sendall(b"hello world", timeout=PATIENCE)
    for expected in (b"hello", b" ", b"world"):
        _expect_equal(
            await b.recv_exactly(len(expected), timeout=PATIENCE),
            expected,
            f"recv_exactly({len(expected)})",
        )
    big = _payload(200_000, seed=7)
    sender = pair.start(f"{pair.labels[0]}.sendall(200 KB)", _send_in_pieces(a, big, seed=8))
    received = await b.recv_exactly(len(big), timeout=PATIENCE)
    await pair.result(sender)
    _expect_same_bytes(received, big, "recv_exactly(200000)")
    await a.sendall(b"abc", timeout=PATIENCE)
    await a.aclose()
    error = await _expect_raises(
        IncompleteRead,
        lambda: b.recv_exactly(5, timeout=PATIENCE),
        "recv_exactly(5) when the peer sent 3 bytes and closed",
    )
    _expect_equal(error.partial, b"abc", "IncompleteRead.partial")
    _expect_equal(error.expected, 5, "IncompleteRead.expected")
    await _expect_eof(b, "recv after IncompleteRead (the partial bytes were handed over)")
    await _expect_raises(
        EndOfStream,
        lambda: b.recv_exactly(5, timeout=PATIENCE),
        "recv_exactly after IncompleteRead",
    )


async def _check_recv_until(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    await a.sendall(b"one\r\ntwo\r\n\r\nxxxxxxxxxxEND", timeout=PATIENCE)
    for expected in (b"one", b"two", b""):
        _expect_equal(
            await b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
            expected,
            "recv_until(b'\\r\\n')",
        )
    _expect_equal(
        await b.recv_until(b"END", max_bytes=10, timeout=PATIENCE),
        b"x" * 10,
        "recv_until(b'END', max_bytes=10) of a 10-byte message (exactly at the limit)",
    )
    await a.sendall(b"thr", timeout=PATIENCE)
    await a.sendall(b"ee", timeout=PATIENCE)
    await a.aclose()
    error = await _expect_raises(
        IncompleteRead,
        lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
        "recv_until when the peer closed in the middle of a message",
    )
    _expect_equal(error.partial, b"three", "IncompleteRead.partial of recv_until")
    _expect_equal(error.expected, None, "IncompleteRead.expected of recv_until")
    await _expect_raises(
        EndOfStream,
        lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
        "recv_until after IncompleteRead",
    )


def _line(index: int) -> bytes:
    return b"%d:%s\n" % (index, b"x" * (index % 53))


async def _check_recv_line(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    await a.sendall(b"a\r\nb\n\nlast", timeout=PATIENCE)
    for expected in (b"a\r", b"b", b""):
        _expect_equal(
            await b.recv_line(timeout=PATIENCE),
            expected,
            "recv_line (a b'\\r' before the newline must be kept)",
        )
    await a.sendall(b" line\n", timeout=PATIENCE)
    _expect_equal(await b.recv_line(timeout=PATIENCE), b"last line", "recv_line across two sends")

    # Many short lines read with every receive method in turn: whatever a helper
    # buffered must come out first and in order.
    count = 3000
    lines = b"".join(_line(index) for index in range(count))
    sender = pair.start(f"{pair.labels[0]}.sendall(lines)", _send_in_pieces(a, lines, seed=9))
    for index in range(count):
        expected = _line(index)
        what = f"line {index} of {count}"
        if index % 7 == 3:
            got = await b.recv_exactly(len(expected), timeout=PATIENCE)
            _expect_equal(got, expected, f"{what} by recv_exactly")
        elif index % 11 == 5:
            got = await b.recv_until(b":", max_bytes=10, timeout=PATIENCE) + b":"
            got += await b.recv_line(max_bytes=100, timeout=PATIENCE) + b"\n"
            _expect_equal(got, expected, f"{what} by recv_until + recv_line")
        elif index % 13 == 6:
            got = await b.recv(1, timeout=PATIENCE)
            got += await b.recv_line(timeout=PATIENCE) + b"\n"
            _expect_equal(got, expected, f"{what} by recv(1) + recv_line")
        else:
            got = await b.recv_line(timeout=PATIENCE) + b"\n"
            _expect_equal(got, expected, f"{what} by recv_line")
    await pair.result(sender)

    await a.sendall(b"partial", timeout=PATIENCE)
    await a.aclose()
    error = await _expect_raises(
        IncompleteRead,
        lambda: b.recv_line(timeout=PATIENCE),
        "recv_line when the peer closed in the middle of a line",
    )
    _expect_equal(error.partial, b"partial", "IncompleteRead.partial of recv_line")
    await _expect_raises(EndOfStream, lambda: b.recv_line(timeout=PATIENCE), "recv_line at EOF")


async def _check_limits(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    await a.sendall(b"x" * 10 + b"\n", timeout=PATIENCE)
    _expect_equal(
        await b.recv_line(max_bytes=10, timeout=PATIENCE),
        b"x" * 10,
        "recv_line(max_bytes=10) of a 10-byte line (exactly at the limit)",
    )
    await a.sendall(b"y" * 11 + b"\n", timeout=PATIENCE)
    await _expect_raises(
        LimitExceeded,
        lambda: b.recv_line(max_bytes=10, timeout=PATIENCE),
        "recv_line(max_bytes=10) of an 11-byte line",
    )
    _expect_equal(
        await b.recv_line(max_bytes=11, timeout=PATIENCE),
        b"y" * 11,
        "recv_line after LimitExceeded (the bytes must stay buffered)",
    )
    await a.sendall(b"z" * 100, timeout=PATIENCE)
    await _expect_raises(
        LimitExceeded,
        lambda: b.recv_until(b"END", max_bytes=20, timeout=PATIENCE),
        "recv_until(b'END', max_bytes=20) with 100 bytes and no delimiter "
        "(must raise as soon as the limit is passed, not wait)",
    )
    await _expect_raises(
        LimitExceeded,
        lambda: b.recv_line(max_bytes=50, timeout=PATIENCE),
        "recv_line(max_bytes=50) with 100 bytes and no newline",
    )
    _expect_same_bytes(
        await b.recv_exactly(100, timeout=PATIENCE),
        b"z" * 100,
        "recv_exactly after LimitExceeded (the bytes must stay buffered)",
    )
    await a.sendall(b"w" * 30 + b"\n", timeout=PATIENCE)
    await _expect_raises(
        LimitExceeded,
        lambda: b.recv_line(max_bytes=20, timeout=PATIENCE),
        "recv_line(max_bytes=20) of a 30-byte line",
    )
    # LimitExceeded proves more than 20 bytes are buffered, so even timeout=0 must
    # return some: buffered bytes come first, without waiting.
    first = await b.recv(5, timeout=0)
    _expect(
        1 <= len(first) <= 5 and (b"w" * 30).startswith(first),
        f"recv(5, timeout=0) after LimitExceeded must return the kept bytes first, "
        f"got {_short(first)}",
    )
    _expect_equal(
        first + await b.recv_line(timeout=PATIENCE),
        b"w" * 30,
        "rest of the line after LimitExceeded",
    )


async def _check_receive_timeouts(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    started = time.monotonic()
    await _expect_recv_timeout(
        pair, b, lambda: b.recv(timeout=SHORT_TIMEOUT), "recv(timeout=0.05) with nothing sent"
    )
    elapsed = time.monotonic() - started
    _expect(
        elapsed >= SHORT_TIMEOUT / 2,
        f"recv(timeout={SHORT_TIMEOUT}) gave up after {elapsed:.3f} s",
    )
    await _expect_recv_timeout(pair, b, lambda: b.recv(timeout=0), "recv(timeout=0), nothing sent")
    await _expect_recv_timeout(
        pair, b, lambda: b.recv_exactly(1, timeout=0), "recv_exactly(1, timeout=0)"
    )
    await _expect_recv_timeout(pair, b, lambda: b.recv_line(timeout=0), "recv_line(timeout=0)")

    await a.sendall(b"hel", timeout=PATIENCE)
    await _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv_exactly(5, timeout=SHORT_TIMEOUT),
        "recv_exactly(5) with 3 bytes sent",
    )
    # More than the rest is sent so a stream that lost the 3 bytes fails at once
    # instead of waiting for bytes that never come.
    await a.sendall(b"lo world", timeout=PATIENCE)
    _expect_equal(
        await b.recv_exactly(5, timeout=PATIENCE),
        b"hello",
        "recv_exactly(5) after a timeout (the 3 bytes received before must be kept)",
    )
    _expect_equal(await b.recv_exactly(6, timeout=PATIENCE), b" world", "recv_exactly(6)")

    await a.sendall(b"half a ", timeout=PATIENCE)
    await _expect_recv_timeout(
        pair, b, lambda: b.recv_line(timeout=SHORT_TIMEOUT), "recv_line with half a line sent"
    )
    await a.sendall(b"line\n", timeout=PATIENCE)
    _expect_equal(
        await b.recv_line(timeout=PATIENCE), b"half a line", "recv_line after a timeout mid-line"
    )

    await a.sendall(b"ab\r", timeout=PATIENCE)
    await _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=SHORT_TIMEOUT),
        "recv_until(b'\\r\\n') with half the delimiter sent",
    )
    await a.sendall(b"\ncd\r\n", timeout=PATIENCE)
    for expected in (b"ab", b"cd"):
        _expect_equal(
            await b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
            expected,
            "recv_until after a timeout in the middle of the delimiter",
        )

    await a.sendall(b"pre", timeout=PATIENCE)
    await _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv_exactly(10, timeout=SHORT_TIMEOUT),
        "recv_exactly(10) with 3 bytes sent",
    )
    await a.sendall(b"fix", timeout=PATIENCE)
    first = await b.recv(2, timeout=PATIENCE)
    _expect(
        1 <= len(first) <= 2 and b"prefix".startswith(first),
        f"recv(2) after a timed-out recv_exactly must return the kept bytes first, got "
        f"{_short(first)}",
    )
    rest = b"prefix"[len(first) :]
    _expect_equal(await b.recv_exactly(len(rest), timeout=PATIENCE), rest, "the rest after recv(2)")

    # The other direction still works after all those timeouts.
    await b.sendall(b"still alive", timeout=PATIENCE)
    _expect_equal(
        await a.recv_exactly(11, timeout=PATIENCE), b"still alive", "reply after timeouts"
    )


async def _check_default_timeout(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    if not hasattr(b, "timeout"):
        return  # the default-timeout attribute is optional
    b.timeout = SHORT_TIMEOUT
    await _expect_recv_timeout(pair, b, b.recv, f"recv() with the default timeout={SHORT_TIMEOUT}")
    await _expect_recv_timeout(
        pair, b, lambda: b.recv_exactly(1), "recv_exactly(1) with the default timeout"
    )
    await _expect_recv_timeout(
        pair, b, lambda: b.recv_until(b"\n", max_bytes=10), "recv_until with the default timeout"
    )
    await _expect_recv_timeout(pair, b, b.recv_line, "recv_line() with the default timeout")

    b.timeout = PATIENCE
    await _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv(timeout=SHORT_TIMEOUT),
        f"recv(timeout={SHORT_TIMEOUT}) with the default timeout={PATIENCE}",
    )

    # math.inf waits forever even with a short default: the data arrives well after
    # the default would have expired. The delay is not synchronisation: if the stream
    # wrongly applies the default, recv raises TimeoutError before the data comes.
    b.timeout = SHORT_TIMEOUT

    async def send_late() -> None:
        await asyncio.sleep(SHORT_TIMEOUT * 4)
        await a.sendall(b"late", timeout=PATIENCE)

    sender = pair.start(f"{pair.labels[0]}.sendall after a delay", send_late())
    _expect_equal(
        await b.recv_exactly(4, timeout=math.inf),
        b"late",
        f"recv_exactly(4, timeout=math.inf) with the default timeout={SHORT_TIMEOUT}",
    )
    await pair.result(sender)

    b.timeout = None
    await a.sendall(b"!", timeout=PATIENCE)
    _expect_equal(await b.recv(timeout=PATIENCE), b"!", "recv after resetting the default to None")


async def _check_send_timeout(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    # Nobody reads, so a send larger than every buffer must time out. After a timed
    # out send the stream's state is unknown, so each direction is tried only once:
    # first with a per-call timeout, then (if there is one) with the default.
    clog = bytes(_CLOGGING_SIZE)
    await _expect_send_timeout(
        pair,
        a,
        lambda: a.sendall(clog, timeout=SHORT_TIMEOUT),
        f"sendall of {_CLOGGING_SIZE >> 20} MiB nobody reads, timeout={SHORT_TIMEOUT}",
    )
    if hasattr(b, "timeout"):
        b.timeout = SHORT_TIMEOUT
        await _expect_send_timeout(
            pair,
            b,
            lambda: b.sendall(clog),
            f"sendall of {_CLOGGING_SIZE >> 20} MiB nobody reads, default timeout",
        )


async def _check_close(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    await a.aclose()
    await a.aclose()  # idempotent: must not raise
    uses: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("sendall(b'x')", lambda: a.sendall(b"x", timeout=PATIENCE)),
        ("sendall(b'')", lambda: a.sendall(b"", timeout=PATIENCE)),
        ("recv()", lambda: a.recv(timeout=PATIENCE)),
        ("recv_exactly(1)", lambda: a.recv_exactly(1, timeout=PATIENCE)),
        ("recv_until(b'\\n')", lambda: a.recv_until(b"\n", max_bytes=10, timeout=PATIENCE)),
        ("recv_line()", lambda: a.recv_line(timeout=PATIENCE)),
    ]
    for name, use in uses:
        await _expect_raises(ClosedResourceError, use, f"{name} after aclose()")
    await _expect_eof(b, "recv after the peer closed")
    await _expect_broken_eventually(b, "sendall after the peer closed")
    await b.aclose()
    await b.aclose()
    await _expect_raises(
        ClosedResourceError, lambda: b.recv(timeout=PATIENCE), "recv() after aclose()"
    )


async def _check_close_discards_buffer(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    await a.sendall(b"line1\nline2\n", timeout=PATIENCE)
    _expect_equal(await b.recv_line(timeout=PATIENCE), b"line1", "recv_line")
    await b.aclose()
    await _expect_raises(
        ClosedResourceError,
        lambda: b.recv_line(timeout=PATIENCE),
        "recv_line() after aclose() with a line still buffered (unread data is discarded)",
    )
    await _expect_raises(
        ClosedResourceError,
        lambda: b.recv(timeout=PATIENCE),
        "recv() after aclose() with bytes still buffered",
    )


class _MarkerError(Exception):
    pass


async def _raise_inside(stream: AsyncStream) -> None:
    async with stream:
        raise _MarkerError


async def _check_context_manager(pair: _AsyncPair[AsyncStream]) -> None:
    a, b = pair.first, pair.second
    async with a as entered:
        _expect(entered is a, "`async with stream as x`: x must be the stream itself")
    await _expect_raises(
        ClosedResourceError,
        lambda: a.sendall(b"x", timeout=PATIENCE),
        "sendall after leaving `async with stream`",
    )
    await _expect_eof(b, "recv after the peer left its `async with` block")
    try:
        await _raise_inside(b)
    except _MarkerError:
        pass
    else:
        _fail("`async with stream` swallowed an exception")
    await _expect_raises(
        ClosedResourceError,
        lambda: b.recv(timeout=PATIENCE),
        "recv after leaving `async with stream` by an exception",
    )


_STREAM_CHECKS: list[tuple[str, Callable[[_AsyncPair[AsyncStream]], Awaitable[None]], bool]] = [
    ("simple exchange, bytes-like arguments, empty sendall", _check_simple_exchange, True),
    ("recv(max_bytes) returns 1..max_bytes", _check_recv_max_bytes, True),
    ("1 MiB each way at the same time", _check_bulk_both_directions, False),
    ("EOF after close, repeated, message helpers at EOF", _check_eof_after_close, True),
    ("recv_exactly", _check_recv_exactly, True),
    ("recv_until", _check_recv_until, True),
    ("recv_line", _check_recv_line, True),
    ("max_bytes limits keep the bytes", _check_limits, True),
    ("receive timeouts raise TimeoutError and keep the bytes", _check_receive_timeouts, True),
    ("default timeout attribute vs per-call timeout", _check_default_timeout, True),
    ("sendall timeout", _check_send_timeout, True),
    ("aclose is idempotent, use after close, peer sees EOF then breaks", _check_close, True),
    ("aclose discards buffered data", _check_close_discards_buffer, True),
    ("async context manager", _check_context_manager, True),
]


# --- AsyncHalfCloseableStream checks --------------------------------------------------


async def _check_send_eof(pair: _AsyncPair[AsyncHalfCloseableStream]) -> None:
    a, b = pair.first, pair.second
    await a.sendall(b"request", timeout=PATIENCE)
    await a.send_eof()
    await a.send_eof()  # idempotent: must not raise
    await _expect_raises(
        ClosedResourceError,
        lambda: a.sendall(b"x", timeout=PATIENCE),
        "sendall after send_eof()",
    )
    await _expect_raises(
        ClosedResourceError,
        lambda: a.sendall(b"", timeout=PATIENCE),
        "sendall(b'') after send_eof()",
    )
    # Our own send_eof must not end our receiving side.
    await _expect_recv_timeout(
        pair,
        a,
        lambda: a.recv(timeout=SHORT_TIMEOUT),
        "recv after our own send_eof(), nothing sent",
    )
    received = await _recv_until_eof(b, 7, "recv after the peer's send_eof()")
    _expect_same_bytes(received, b"request", "data sent before send_eof()")
    await _expect_eof(b, "recv again after EOF")
    await _expect_raises(EndOfStream, lambda: b.recv_line(timeout=PATIENCE), "recv_line after EOF")
    await b.sendall(b"response\n", timeout=PATIENCE)
    _expect_equal(
        await a.recv_line(timeout=PATIENCE), b"response", "reply received after our send_eof()"
    )
    await b.send_eof()
    await _expect_eof(a, "recv after both sides sent EOF")
    await a.send_eof()
    await a.aclose()
    await b.aclose()


async def _check_send_eof_after_close(pair: _AsyncPair[AsyncHalfCloseableStream]) -> None:
    a, b = pair.first, pair.second
    await a.aclose()
    await _expect_raises(ClosedResourceError, a.send_eof, "send_eof() after aclose()")
    # Closed wins over idempotence: EOF already sent, then closed, is still closed.
    await b.send_eof()
    await b.aclose()
    await _expect_raises(
        ClosedResourceError, b.send_eof, "send_eof() after send_eof() and aclose()"
    )


async def _check_half_close_oracle(pair: _AsyncPair[AsyncHalfCloseableStream]) -> None:
    a, b = pair.first, pair.second
    request = _payload(_BULK_SIZE + 12345, seed=10)
    reply = _payload(300_000, seed=11)

    async def send_request() -> None:
        await _send_in_pieces(a, request, seed=12)
        await a.send_eof()

    async def answer() -> bytes:
        digest = hashlib.sha256()
        size = 0
        for _ in range(len(request) + 1):
            chunk = await b.recv(65536, timeout=PATIENCE)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        # The answer is sent after EOF, through the direction that is still open.
        await b.sendall(b"%d %s\n" % (size, digest.hexdigest().encode()), timeout=PATIENCE)
        await _send_in_pieces(b, reply, seed=13)
        await b.send_eof()
        return digest.digest()

    sender = pair.start(f"{pair.labels[0]}: send then send_eof", send_request())
    oracle = pair.start(f"{pair.labels[1]}: hash until EOF then answer", answer())
    await pair.result(sender)
    summary = await a.recv_line(max_bytes=200, timeout=PATIENCE)
    expected = b"%d %s" % (len(request), hashlib.sha256(request).hexdigest().encode())
    _expect(
        summary == expected,
        f"the peer received {summary.split(b' ')[0].decode(errors='replace')} bytes with "
        f"another sha256 than the {len(request)} bytes sent before send_eof()",
    )
    _expect_same_bytes(
        await a.recv_exactly(len(reply), timeout=PATIENCE),
        reply,
        "data the peer sent after it saw our EOF",
    )
    await _expect_eof(a, "recv after the peer's send_eof()")
    await pair.result(oracle)


_HALF_CLOSE_CHECKS: list[
    tuple[str, Callable[[_AsyncPair[AsyncHalfCloseableStream]], Awaitable[None]], bool]
] = [
    ("send_eof is idempotent, forbids sendall, keeps receiving", _check_send_eof, True),
    ("send_eof after aclose", _check_send_eof_after_close, True),
    ("half-close oracle: the peer hashes until EOF, then answers", _check_half_close_oracle, True),
]
