"""Conformance suites: every stream implementation must pass them.

:func:`check_stream` and :func:`check_half_closeable_stream` take a function that makes
a fresh connected pair of streams and check, one contract of :mod:`sockit.abc` at a
time, that the pair keeps it: byte-exact data both ways (also 1 MiB each way at once),
``recv`` sizes, EOF if and only if the peer ended its side, the message helpers' EOF
errors (:class:`~sockit.EndOfStream` at a boundary, :class:`~sockit.IncompleteRead`
mid-message), limits that keep the bytes, timeouts that raise ``TimeoutError`` and keep
the bytes, default and per-call timeouts, idempotent close, use after close, the
context manager, and for half-closeable streams ``send_eof`` with the half-close
"oracle" (the peer answers with a digest of everything it received after it saw EOF).

The first violation raises :class:`AssertionError` naming the check, the direction and
what was expected; an unexpected exception is a violation too (chained as the cause).
Sockit runs the suites on memory pairs, socketpairs, TCP over IPv4 and IPv6 and UNIX
sockets; a new stream class (TLS, a framing wrapper, a third-party transport) is
finished when it passes them too.

Every check makes its own pair and closes both ends, whatever happens. Concurrent
sends and receives run in threads that are always joined; every blocking call carries a
timeout (:data:`PATIENCE` when it should succeed) so no thread can outlive its check,
and every loop is bounded in count and time. This module must never open a network
connection of its own or depend on pytest: it only uses the streams it is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from sockit.abc import HalfCloseableStream, Stream
from sockit.errors import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    IncompleteRead,
    LimitExceeded,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

__all__ = ["MIN_BUFFER", "PATIENCE", "SHORT_TIMEOUT", "check_half_closeable_stream", "check_stream"]

PATIENCE = 10.0
"""Seconds an operation that should succeed may take before the check gives up.

Generous because CI machines stall; a correct stream never gets near it, so it only
bounds how long a broken one can hang a test.
"""

SHORT_TIMEOUT = 0.05
"""The timeout of calls that are expected to time out: long enough for loopback data
that was already sent to arrive, short enough to keep the suite fast."""

MIN_BUFFER = 256
"""Bytes the suite sends without receiving them concurrently, so the least each direction
of a stream under test must buffer."""

_BULK_SIZE = 1 << 20
# Large enough that no socket buffer can take it at once, so a sendall with a short
# timeout must time out while nobody reads (Linux autotunes loopback TCP buffers up to
# tcp_wmem[2] + tcp_rmem[2], 4 MiB + 6 MiB by default).
_CLOGGING_SIZE = 32 << 20
# A stream that raises neither data nor an error on a dead peer is caught by bounding
# the tries: the first send to a closed TCP peer succeeds (the peer answers with a
# reset), the next ones fail.
_BROKEN_PEER_TRIES = 1000
_BROKEN_PEER_PAUSE = 0.01

# How long a call expected to time out may block before the suite unblocks it.
_WATCHDOG_DELAY = PATIENCE / 2
# What the watchdog sends to end a receive that ignores its timeout: completes a line,
# a CRLF message and any recv_exactly of up to 128 bytes.
_UNBLOCKING_DATA = b"\r\n" * 64

_S = TypeVar("_S", bound=Stream)
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


def _expect_raises(expected: type[_E], call: Callable[[], object], what: str) -> _E:
    """Call ``call`` and return the exception it raised, which must be ``expected``."""
    names = expected.__name__
    try:
        result = call()
    except expected as error:
        return error
    except AssertionError:
        raise
    except Exception as error:
        raise AssertionError(
            f"{what}: expected {names}, got {type(error).__name__}: {error}"
        ) from error
    _fail(f"{what}: expected {names}, but it returned {_short(result)}")


def _first_difference(actual: bytes, expected: bytes) -> str:
    for index, (left, right) in enumerate(zip(actual, expected, strict=False)):
        if left != right:
            return f"first difference at byte {index}"
    return f"{len(actual)} bytes instead of {len(expected)}"


def _expect_same_bytes(actual: bytes, expected: bytes, what: str) -> None:
    if actual != expected:
        _fail(f"{what}: data differs, {_first_difference(actual, expected)}")


# --- threads that are always joined ---------------------------------------------------


class _Task(Generic[_T]):
    """A function running in a daemon thread; :meth:`result` joins it and re-raises."""

    def __init__(self, name: str, function: Callable[[], _T]) -> None:
        self.name = name
        self._function = function
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        # Daemon: if a broken stream ignores every timeout, the interpreter can still
        # exit; the check reports the hang instead of waiting forever.
        self._thread = threading.Thread(target=self._run, name=f"sockit-check-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._function()
        except BaseException as error:  # noqa: BLE001 - handed to the joining thread
            self._error = error
        finally:
            self._done.set()

    def done(self, wait: float = 0.0) -> bool:
        """Whether the function returned or raised (waiting up to ``wait`` seconds)."""
        return self._done.wait(wait)

    @property
    def failed(self) -> bool:
        """Whether the function raised (only meaningful once :meth:`done`)."""
        return self._error is not None

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; return whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> _T:
        """Join the thread and return what the function returned.

        Waits at most :data:`PATIENCE` plus a margin; what the function raised is
        raised as an :class:`AssertionError` naming the task.
        """
        if not self.join(PATIENCE + 5.0):
            _fail(f"{self.name} did not finish within {PATIENCE + 5.0:.0f} s (hung?)")
        if self._error is not None:
            if isinstance(self._error, AssertionError):
                raise AssertionError(f"{self.name}: {self._error}") from self._error
            raise AssertionError(
                f"{self.name} raised {type(self._error).__name__}: {self._error}"
            ) from self._error
        return self._value  # type: ignore[return-value]


class _Pair(Generic[_S]):
    """One check's pair of streams plus its threads; closes and joins all on exit."""

    def __init__(self, first: _S, second: _S, labels: tuple[str, str]) -> None:
        self.first = first
        self.second = second
        self.labels = labels
        self._tasks: list[_Task[Any]] = []

    def peer_of(self, stream: Stream) -> _S:
        """The other stream of the pair."""
        return self.second if stream is self.first else self.first

    def start(self, name: str, function: Callable[[], _T]) -> _Task[_T]:
        """Run ``function`` in a thread that is joined when the check ends."""
        task = _Task(name, function)
        self._tasks.append(task)
        return task

    def __enter__(self) -> _Pair[_S]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A thread that failed before the cleanup usually explains why the main thread
        # failed (it waited for data the thread never sent): report that error instead.
        # Errors after the cleanup are consequences of closing the streams.
        failed_first = [task for task in self._tasks if task.done() and task.failed]
        close_errors: list[str] = []
        for label, stream in zip(self.labels, (self.first, self.second), strict=True):
            try:
                stream.close()
            except Exception as error:  # noqa: BLE001 - reported below
                close_errors.append(f"{label}.close() raised {type(error).__name__}: {error}")
        # Every blocking call in a task has a timeout of at most PATIENCE, so this
        # bounded join ends them all (closing the streams wakes most of them earlier).
        hung = [task.name for task in self._tasks if not task.join(PATIENCE + 5.0)]
        if exc_type is not None:
            if failed_first:
                failed_first[0].result()
            return
        if close_errors:
            _fail("; ".join(close_errors))
        if hung:
            _fail(f"threads still running after the check: {', '.join(hung)}")


# --- the runner -----------------------------------------------------------------------


def _run_checks(
    make_pair: Callable[[], tuple[_S, _S]],
    checks: Sequence[tuple[str, Callable[[_Pair[_S]], None], bool]],
    kind: type,
) -> None:
    for description, check, both_orientations in checks:
        orientations = (False, True) if both_orientations else (False,)
        for flipped in orientations:
            first, second = make_pair()
            labels = ("second", "first") if flipped else ("first", "second")
            if flipped:
                first, second = second, first
            direction = f" ({labels[0]} -> {labels[1]})" if both_orientations else ""
            name = f"{description}{direction}"
            try:
                with _Pair(first, second, labels) as pair:
                    for label, stream in zip(labels, (first, second), strict=True):
                        _expect(
                            isinstance(stream, kind),
                            f"the {label} stream is a {type(stream).__name__}, "
                            f"not a {kind.__name__}",
                        )
                    check(pair)
            except AssertionError as error:
                raise AssertionError(f"[{name}] {error}") from error
            except Exception as error:
                raise AssertionError(
                    f"[{name}] unexpected {type(error).__name__}: {error}"
                ) from error


def check_stream(make_pair: Callable[[], tuple[Stream, Stream]]) -> None:
    """Check the :class:`sockit.abc.Stream` contract on the pairs ``make_pair()`` returns.

    Raises :class:`AssertionError` describing the first violation.

    ``make_pair`` is called once per check (and once more per direction for the
    one-way checks) and must return two freshly connected streams; the suite closes
    them. Each direction must buffer at least :data:`MIN_BUFFER` bytes that nobody
    reads yet (every socket buffers far more); larger transfers run in threads. The
    checks of the ``timeout`` attribute run only if the streams have one.
    Takes a few seconds: several checks wait for :data:`SHORT_TIMEOUT` on purpose.
    """
    _run_checks(make_pair, _STREAM_CHECKS, Stream)


def check_half_closeable_stream(
    make_pair: Callable[[], tuple[HalfCloseableStream, HalfCloseableStream]],
) -> None:
    """Run :func:`check_stream`, then check the :class:`sockit.abc.HalfCloseableStream` part.

    That is: ``send_eof`` is idempotent, forbids further sends, shows the peer EOF
    after every byte sent before it, and leaves the other direction working (the
    half-close oracle, in both directions). Raises :class:`AssertionError` describing
    the first violation.
    """
    check_stream(make_pair)
    _run_checks(make_pair, _HALF_CLOSE_CHECKS, HalfCloseableStream)


# --- helpers for the checks -----------------------------------------------------------


def _payload(size: int, seed: int) -> bytes:
    """Return deterministic pseudo-random bytes.

    Every byte value occurs, and there is no repeating pattern a stream could get right
    by accident.
    """
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not a secret


def _send_in_pieces(stream: Stream, data: bytes, seed: int, *, max_piece: int = 16384) -> None:
    rng = random.Random(seed)  # noqa: S311 - sizes for a test, not a secret
    view = memoryview(data)
    position = 0
    while position < len(data):
        size = rng.randint(1, max_piece)
        stream.sendall(view[position : position + size], timeout=PATIENCE)
        position += size


def _recv_exactly_with_recv(stream: Stream, size: int, what: str, seed: int) -> bytes:
    """Receive ``size`` bytes with plain ``recv`` of random sizes, checking each size."""
    rng = random.Random(seed)  # noqa: S311 - sizes for a test, not a secret
    received = bytearray()
    # Every successful recv returns at least one byte, so size iterations suffice.
    for _ in range(size):
        if len(received) >= size:
            break
        max_bytes = rng.randint(1, 65536)
        chunk = stream.recv(max_bytes, timeout=PATIENCE)
        if not chunk:
            _fail(f"{what}: recv returned EOF after {len(received)} of {size} bytes")
        _expect(
            len(chunk) <= max_bytes,
            f"{what}: recv({max_bytes}) returned {len(chunk)} bytes",
        )
        received += chunk
    return bytes(received)


def _recv_until_eof(stream: Stream, limit: int, what: str) -> bytes:
    """Receive with ``recv`` until EOF; more than ``limit`` bytes is a violation."""
    received = bytearray()
    for _ in range(limit + 1):
        chunk = stream.recv(65536, timeout=PATIENCE)
        if not chunk:
            return bytes(received)
        received += chunk
        _expect(len(received) <= limit, f"{what}: more than {limit} bytes before EOF")
    _fail(f"{what}: no EOF after {limit + 1} receives")


def _expect_timeout(
    pair: _Pair[Any],
    call: Callable[[], object],
    what: str,
    *,
    unblock: Callable[[], object],
    within: float = _WATCHDOG_DELAY,
) -> None:
    """Expect ``call`` to raise ``TimeoutError`` in less than ``within`` seconds.

    A stream that ignores its timeout would block the check forever, so a watchdog
    thread runs ``unblock`` (send the blocked receiver some data, or drain the blocked
    sender's peer) after :data:`_WATCHDOG_DELAY` seconds: the call then returns and
    the check fails with a message instead of hanging.
    """
    finished = threading.Event()

    def watchdog() -> None:
        if finished.wait(_WATCHDOG_DELAY):
            return
        # Only there to end a hung call; whether it works is not what is checked.
        with contextlib.suppress(Exception):
            unblock()

    pair.start(f"watchdog of {what}", watchdog)
    started = time.monotonic()
    try:
        _expect_raises(TimeoutError, call, what)
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


def _expect_recv_timeout(
    pair: _Pair[Any], receiver: Stream, call: Callable[[], object], what: str
) -> None:
    """:func:`_expect_timeout` for a receive on ``receiver``: the watchdog sends."""
    peer = pair.peer_of(receiver)
    _expect_timeout(
        pair, call, what, unblock=lambda: peer.sendall(_UNBLOCKING_DATA, timeout=PATIENCE)
    )


def _expect_send_timeout(
    pair: _Pair[Any], sender: Stream, call: Callable[[], object], what: str
) -> None:
    """:func:`_expect_timeout` for a send on ``sender``: the watchdog drains the peer."""
    peer = pair.peer_of(sender)

    def drain() -> None:
        for _ in range(_CLOGGING_SIZE):
            if not peer.recv(1 << 20, timeout=PATIENCE):
                return

    _expect_timeout(pair, call, what, unblock=drain)


def _expect_eof(stream: Stream, what: str) -> None:
    _expect_equal(stream.recv(65536, timeout=PATIENCE), b"", f"{what}: recv() at EOF")


def _expect_broken_eventually(stream: Stream, what: str) -> None:
    """Send until the stream reports the dead peer; bounded in tries and time."""
    deadline = time.monotonic() + _WATCHDOG_DELAY
    pause = threading.Event()
    for _ in range(_BROKEN_PEER_TRIES):
        try:
            stream.sendall(b"x" * 1024, timeout=PATIENCE)
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
        pause.wait(_BROKEN_PEER_PAUSE)
    _fail(f"{what}: sendall kept succeeding after the peer closed")


# --- Stream checks --------------------------------------------------------------------


def _check_simple_exchange(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    _expect_equal(a.sendall(b"x", timeout=PATIENCE), None, "sendall(b'x') return value")
    _expect_equal(b.recv(1, timeout=PATIENCE), b"x", "recv(1) after sendall(b'x')")
    b.sendall(bytearray(b"yz"), timeout=PATIENCE)
    _expect_equal(a.recv_exactly(2, timeout=PATIENCE), b"yz", "sendall(bytearray) then back")
    a.sendall(memoryview(b"0123456789")[2:5], timeout=PATIENCE)
    _expect_equal(b.recv_exactly(3, timeout=PATIENCE), b"234", "sendall(memoryview slice)")
    # An empty send is no message and no EOF: nothing arrives.
    a.sendall(b"", timeout=PATIENCE)
    _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv(timeout=SHORT_TIMEOUT),
        "recv after the peer's sendall(b'') (an empty send must not look like EOF)",
    )
    a.sendall(b"after", timeout=PATIENCE)
    _expect_equal(b.recv_exactly(5, timeout=PATIENCE), b"after", "data after an empty send")


def _check_recv_max_bytes(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    data = _payload(4096, seed=1)
    # In a thread: the stream need not buffer 4 KiB without a reader.
    sender = pair.start(
        f"{pair.labels[0]}.sendall(4 KiB)", lambda: a.sendall(data, timeout=PATIENCE)
    )
    received = bytearray()
    sizes = (1, 2, 7, 100, 1000, 65536)
    for index in range(len(data)):
        if len(received) >= len(data):
            break
        max_bytes = sizes[index % len(sizes)]
        chunk = b.recv(max_bytes, timeout=PATIENCE)
        _expect(
            1 <= len(chunk) <= max_bytes,
            f"recv({max_bytes}) returned {len(chunk)} bytes before EOF (must be 1..{max_bytes})",
        )
        received += chunk
    sender.result()
    _expect_same_bytes(bytes(received), data, "4096 bytes received with recv of varying sizes")


def _check_bulk_both_directions(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    forward = _payload(_BULK_SIZE, seed=2)
    backward = _payload(_BULK_SIZE, seed=3)
    senders = [
        pair.start("first.sendall(1 MiB)", lambda: _send_in_pieces(a, forward, seed=4)),
        pair.start("second.sendall(1 MiB)", lambda: _send_in_pieces(b, backward, seed=5)),
    ]
    by_recv = pair.start(
        "second.recv(1 MiB)",
        lambda: _recv_exactly_with_recv(b, _BULK_SIZE, "second.recv", seed=6),
    )
    by_exactly = pair.start(
        "first.recv_exactly(1 MiB)", lambda: a.recv_exactly(_BULK_SIZE, timeout=PATIENCE)
    )
    for sender in senders:
        sender.result()
    received_forward = by_recv.result()
    received_backward = by_exactly.result()
    _expect_same_bytes(received_forward, forward, f"1 MiB {pair.labels[0]} -> {pair.labels[1]}")
    _expect_same_bytes(received_backward, backward, f"1 MiB {pair.labels[1]} -> {pair.labels[0]}")


def _check_eof_after_close(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    a.sendall(b"last words", timeout=PATIENCE)
    a.close()
    received = _recv_until_eof(b, 10, "recv after the peer sent 10 bytes and closed")
    _expect_same_bytes(received, b"last words", "data sent before close")
    for attempt in range(3):
        _expect_eof(b, f"recv number {attempt + 2} after EOF (EOF must repeat)")
    error = _expect_raises(
        EndOfStream, lambda: b.recv_exactly(1, timeout=PATIENCE), "recv_exactly(1) at EOF"
    )
    _expect(not isinstance(error, IncompleteRead), "recv_exactly(1) at a clean EOF")
    for attempt in range(2):
        _expect_raises(
            EndOfStream,
            lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
            f"recv_until at EOF (call {attempt + 1})",
        )
        _expect_raises(
            EndOfStream,
            lambda: b.recv_line(timeout=PATIENCE),
            f"recv_line at EOF (call {attempt + 1})",
        )
    _expect_eof(b, "recv after the message helpers saw EOF")


def _check_recv_exactly(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    a.sendall(b"hello world", timeout=PATIENCE)
    for expected in (b"hello", b" ", b"world"):
        _expect_equal(
            b.recv_exactly(len(expected), timeout=PATIENCE),
            expected,
            f"recv_exactly({len(expected)})",
        )
    big = _payload(200_000, seed=7)
    sender = pair.start(
        f"{pair.labels[0]}.sendall(200 KB)", lambda: _send_in_pieces(a, big, seed=8)
    )
    received = b.recv_exactly(len(big), timeout=PATIENCE)
    sender.result()
    _expect_same_bytes(received, big, "recv_exactly(200000)")
    a.sendall(b"abc", timeout=PATIENCE)
    a.close()
    error = _expect_raises(
        IncompleteRead,
        lambda: b.recv_exactly(5, timeout=PATIENCE),
        "recv_exactly(5) when the peer sent 3 bytes and closed",
    )
    _expect_equal(error.partial, b"abc", "IncompleteRead.partial")
    _expect_equal(error.expected, 5, "IncompleteRead.expected")
    _expect_eof(b, "recv after IncompleteRead (the partial bytes were handed over)")
    _expect_raises(
        EndOfStream,
        lambda: b.recv_exactly(5, timeout=PATIENCE),
        "recv_exactly after IncompleteRead",
    )


def _check_recv_until(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    a.sendall(b"one\r\ntwo\r\n\r\nxxxxxxxxxxEND", timeout=PATIENCE)
    for expected in (b"one", b"two", b""):
        _expect_equal(
            b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
            expected,
            "recv_until(b'\\r\\n')",
        )
    _expect_equal(
        b.recv_until(b"END", max_bytes=10, timeout=PATIENCE),
        b"x" * 10,
        "recv_until(b'END', max_bytes=10) of a 10-byte message (exactly at the limit)",
    )
    a.sendall(b"thr", timeout=PATIENCE)
    a.sendall(b"ee", timeout=PATIENCE)
    a.close()
    error = _expect_raises(
        IncompleteRead,
        lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
        "recv_until when the peer closed in the middle of a message",
    )
    _expect_equal(error.partial, b"three", "IncompleteRead.partial of recv_until")
    _expect_equal(error.expected, None, "IncompleteRead.expected of recv_until")
    _expect_raises(
        EndOfStream,
        lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
        "recv_until after IncompleteRead",
    )


def _line(index: int) -> bytes:
    return b"%d:%s\n" % (index, b"x" * (index % 53))


def _check_recv_line(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    a.sendall(b"a\r\nb\n\nlast", timeout=PATIENCE)
    for expected in (b"a\r", b"b", b""):
        _expect_equal(
            b.recv_line(timeout=PATIENCE),
            expected,
            "recv_line (a b'\\r' before the newline must be kept)",
        )
    a.sendall(b" line\n", timeout=PATIENCE)
    _expect_equal(b.recv_line(timeout=PATIENCE), b"last line", "recv_line across two sends")

    # Many short lines read with every receive method in turn: whatever a helper
    # buffered must come out first and in order.
    count = 3000
    lines = b"".join(_line(index) for index in range(count))
    sender = pair.start(
        f"{pair.labels[0]}.sendall(lines)", lambda: _send_in_pieces(a, lines, seed=9)
    )
    for index in range(count):
        expected = _line(index)
        what = f"line {index} of {count}"
        if index % 7 == 3:
            got = b.recv_exactly(len(expected), timeout=PATIENCE)
            _expect_equal(got, expected, f"{what} by recv_exactly")
        elif index % 11 == 5:
            got = b.recv_until(b":", max_bytes=10, timeout=PATIENCE) + b":"
            got += b.recv_line(max_bytes=100, timeout=PATIENCE) + b"\n"
            _expect_equal(got, expected, f"{what} by recv_until + recv_line")
        elif index % 13 == 6:
            got = b.recv(1, timeout=PATIENCE) + b.recv_line(timeout=PATIENCE) + b"\n"
            _expect_equal(got, expected, f"{what} by recv(1) + recv_line")
        else:
            _expect_equal(b.recv_line(timeout=PATIENCE) + b"\n", expected, f"{what} by recv_line")
    sender.result()

    a.sendall(b"partial", timeout=PATIENCE)
    a.close()
    error = _expect_raises(
        IncompleteRead,
        lambda: b.recv_line(timeout=PATIENCE),
        "recv_line when the peer closed in the middle of a line",
    )
    _expect_equal(error.partial, b"partial", "IncompleteRead.partial of recv_line")
    _expect_raises(EndOfStream, lambda: b.recv_line(timeout=PATIENCE), "recv_line at EOF")


def _check_limits(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    a.sendall(b"x" * 10 + b"\n", timeout=PATIENCE)
    _expect_equal(
        b.recv_line(max_bytes=10, timeout=PATIENCE),
        b"x" * 10,
        "recv_line(max_bytes=10) of a 10-byte line (exactly at the limit)",
    )
    a.sendall(b"y" * 11 + b"\n", timeout=PATIENCE)
    _expect_raises(
        LimitExceeded,
        lambda: b.recv_line(max_bytes=10, timeout=PATIENCE),
        "recv_line(max_bytes=10) of an 11-byte line",
    )
    _expect_equal(
        b.recv_line(max_bytes=11, timeout=PATIENCE),
        b"y" * 11,
        "recv_line after LimitExceeded (the bytes must stay buffered)",
    )
    a.sendall(b"z" * 100, timeout=PATIENCE)
    _expect_raises(
        LimitExceeded,
        lambda: b.recv_until(b"END", max_bytes=20, timeout=PATIENCE),
        "recv_until(b'END', max_bytes=20) with 100 bytes and no delimiter "
        "(must raise as soon as the limit is passed, not wait)",
    )
    _expect_raises(
        LimitExceeded,
        lambda: b.recv_line(max_bytes=50, timeout=PATIENCE),
        "recv_line(max_bytes=50) with 100 bytes and no newline",
    )
    _expect_same_bytes(
        b.recv_exactly(100, timeout=PATIENCE),
        b"z" * 100,
        "recv_exactly after LimitExceeded (the bytes must stay buffered)",
    )
    a.sendall(b"w" * 30 + b"\n", timeout=PATIENCE)
    _expect_raises(
        LimitExceeded,
        lambda: b.recv_line(max_bytes=20, timeout=PATIENCE),
        "recv_line(max_bytes=20) of a 30-byte line",
    )
    # LimitExceeded proves more than 20 bytes are buffered, so even timeout=0 must
    # return some: buffered bytes come first, without waiting.
    first = b.recv(5, timeout=0)
    _expect(
        1 <= len(first) <= 5 and (b"w" * 30).startswith(first),
        f"recv(5, timeout=0) after LimitExceeded must return the kept bytes first, "
        f"got {_short(first)}",
    )
    _expect_equal(
        first + b.recv_line(timeout=PATIENCE), b"w" * 30, "rest of the line after LimitExceeded"
    )


def _check_receive_timeouts(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    started = time.monotonic()
    _expect_recv_timeout(
        pair, b, lambda: b.recv(timeout=SHORT_TIMEOUT), "recv(timeout=0.05) with nothing sent"
    )
    elapsed = time.monotonic() - started
    _expect(
        elapsed >= SHORT_TIMEOUT / 2,
        f"recv(timeout={SHORT_TIMEOUT}) gave up after {elapsed:.3f} s",
    )
    _expect_recv_timeout(pair, b, lambda: b.recv(timeout=0), "recv(timeout=0), nothing sent")
    _expect_recv_timeout(
        pair, b, lambda: b.recv_exactly(1, timeout=0), "recv_exactly(1, timeout=0)"
    )
    _expect_recv_timeout(pair, b, lambda: b.recv_line(timeout=0), "recv_line(timeout=0)")

    a.sendall(b"hel", timeout=PATIENCE)
    _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv_exactly(5, timeout=SHORT_TIMEOUT),
        "recv_exactly(5) with 3 bytes sent",
    )
    # More than the rest is sent so a stream that lost the 3 bytes fails at once
    # instead of waiting for bytes that never come.
    a.sendall(b"lo world", timeout=PATIENCE)
    _expect_equal(
        b.recv_exactly(5, timeout=PATIENCE),
        b"hello",
        "recv_exactly(5) after a timeout (the 3 bytes received before must be kept)",
    )
    _expect_equal(b.recv_exactly(6, timeout=PATIENCE), b" world", "recv_exactly(6)")

    a.sendall(b"half a ", timeout=PATIENCE)
    _expect_recv_timeout(
        pair, b, lambda: b.recv_line(timeout=SHORT_TIMEOUT), "recv_line with half a line sent"
    )
    a.sendall(b"line\n", timeout=PATIENCE)
    _expect_equal(
        b.recv_line(timeout=PATIENCE), b"half a line", "recv_line after a timeout mid-line"
    )

    a.sendall(b"ab\r", timeout=PATIENCE)
    _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv_until(b"\r\n", max_bytes=100, timeout=SHORT_TIMEOUT),
        "recv_until(b'\\r\\n') with half the delimiter sent",
    )
    a.sendall(b"\ncd\r\n", timeout=PATIENCE)
    for expected in (b"ab", b"cd"):
        _expect_equal(
            b.recv_until(b"\r\n", max_bytes=100, timeout=PATIENCE),
            expected,
            "recv_until after a timeout in the middle of the delimiter",
        )

    a.sendall(b"pre", timeout=PATIENCE)
    _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv_exactly(10, timeout=SHORT_TIMEOUT),
        "recv_exactly(10) with 3 bytes sent",
    )
    a.sendall(b"fix", timeout=PATIENCE)
    first = b.recv(2, timeout=PATIENCE)
    _expect(
        1 <= len(first) <= 2 and b"prefix".startswith(first),
        f"recv(2) after a timed-out recv_exactly must return the kept bytes first, got "
        f"{_short(first)}",
    )
    rest = b"prefix"[len(first) :]
    _expect_equal(b.recv_exactly(len(rest), timeout=PATIENCE), rest, "the rest after recv(2)")

    # The other direction still works after all those timeouts.
    b.sendall(b"still alive", timeout=PATIENCE)
    _expect_equal(a.recv_exactly(11, timeout=PATIENCE), b"still alive", "reply after timeouts")


def _check_default_timeout(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    if not hasattr(b, "timeout"):
        return  # the default-timeout attribute is optional
    b.timeout = SHORT_TIMEOUT
    _expect_recv_timeout(pair, b, b.recv, f"recv() with the default timeout={SHORT_TIMEOUT}")
    _expect_recv_timeout(
        pair, b, lambda: b.recv_exactly(1), "recv_exactly(1) with the default timeout"
    )
    _expect_recv_timeout(
        pair, b, lambda: b.recv_until(b"\n", max_bytes=10), "recv_until with the default timeout"
    )
    _expect_recv_timeout(pair, b, b.recv_line, "recv_line() with the default timeout")

    b.timeout = PATIENCE
    _expect_recv_timeout(
        pair,
        b,
        lambda: b.recv(timeout=SHORT_TIMEOUT),
        f"recv(timeout={SHORT_TIMEOUT}) with the default timeout={PATIENCE}",
    )

    # math.inf waits forever even with a short default: the data arrives well after
    # the default would have expired. The delay is not synchronisation: if the stream
    # wrongly applies the default, recv raises TimeoutError before the data comes.
    b.timeout = SHORT_TIMEOUT
    delay = threading.Event()

    def send_late() -> None:
        delay.wait(SHORT_TIMEOUT * 4)
        a.sendall(b"late", timeout=PATIENCE)

    sender = pair.start(f"{pair.labels[0]}.sendall after a delay", send_late)
    _expect_equal(
        b.recv_exactly(4, timeout=math.inf),
        b"late",
        f"recv_exactly(4, timeout=math.inf) with the default timeout={SHORT_TIMEOUT}",
    )
    sender.result()

    b.timeout = None
    a.sendall(b"!", timeout=PATIENCE)
    _expect_equal(b.recv(timeout=PATIENCE), b"!", "recv after resetting the default to None")


def _check_send_timeout(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    # Nobody reads, so a send larger than every buffer must time out. After a timed
    # out send the stream's state is unknown, so each direction is tried only once:
    # first with a per-call timeout, then (if there is one) with the default.
    clog = bytes(_CLOGGING_SIZE)
    _expect_send_timeout(
        pair,
        a,
        lambda: a.sendall(clog, timeout=SHORT_TIMEOUT),
        f"sendall of {_CLOGGING_SIZE >> 20} MiB nobody reads, timeout={SHORT_TIMEOUT}",
    )
    if hasattr(b, "timeout"):
        b.timeout = SHORT_TIMEOUT
        _expect_send_timeout(
            pair,
            b,
            lambda: b.sendall(clog),
            f"sendall of {_CLOGGING_SIZE >> 20} MiB nobody reads, default timeout",
        )


def _check_close(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    a.close()
    a.close()  # idempotent: must not raise
    uses: list[tuple[str, Callable[[], object]]] = [
        ("sendall(b'x')", lambda: a.sendall(b"x", timeout=PATIENCE)),
        ("sendall(b'')", lambda: a.sendall(b"", timeout=PATIENCE)),
        ("recv()", lambda: a.recv(timeout=PATIENCE)),
        ("recv_exactly(1)", lambda: a.recv_exactly(1, timeout=PATIENCE)),
        ("recv_until(b'\\n')", lambda: a.recv_until(b"\n", max_bytes=10, timeout=PATIENCE)),
        ("recv_line()", lambda: a.recv_line(timeout=PATIENCE)),
    ]
    for name, use in uses:
        _expect_raises(ClosedResourceError, use, f"{name} after close()")
    _expect_eof(b, "recv after the peer closed")
    _expect_broken_eventually(b, "sendall after the peer closed")
    b.close()
    b.close()
    _expect_raises(ClosedResourceError, lambda: b.recv(timeout=PATIENCE), "recv() after close()")


def _check_close_discards_buffer(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    a.sendall(b"line1\nline2\n", timeout=PATIENCE)
    _expect_equal(b.recv_line(timeout=PATIENCE), b"line1", "recv_line")
    b.close()
    _expect_raises(
        ClosedResourceError,
        lambda: b.recv_line(timeout=PATIENCE),
        "recv_line() after close() with a line still buffered (unread data is discarded)",
    )
    _expect_raises(
        ClosedResourceError,
        lambda: b.recv(timeout=PATIENCE),
        "recv() after close() with bytes still buffered",
    )


class _MarkerError(Exception):
    pass


def _raise_inside(stream: Stream) -> None:
    with stream:
        raise _MarkerError


def _check_context_manager(pair: _Pair[Stream]) -> None:
    a, b = pair.first, pair.second
    with a as entered:
        _expect(entered is a, "`with stream as x`: x must be the stream itself")
    _expect_raises(
        ClosedResourceError,
        lambda: a.sendall(b"x", timeout=PATIENCE),
        "sendall after leaving `with stream`",
    )
    _expect_eof(b, "recv after the peer left its `with` block")
    try:
        _raise_inside(b)
    except _MarkerError:
        pass
    else:
        _fail("`with stream` swallowed an exception")
    _expect_raises(
        ClosedResourceError,
        lambda: b.recv(timeout=PATIENCE),
        "recv after leaving `with stream` by an exception",
    )


_STREAM_CHECKS: list[tuple[str, Callable[[_Pair[Stream]], None], bool]] = [
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
    ("close is idempotent, use after close, peer sees EOF then breaks", _check_close, True),
    ("close discards buffered data", _check_close_discards_buffer, True),
    ("context manager", _check_context_manager, True),
]


# --- HalfCloseableStream checks -------------------------------------------------------


def _check_send_eof(pair: _Pair[HalfCloseableStream]) -> None:
    a, b = pair.first, pair.second
    a.sendall(b"request", timeout=PATIENCE)
    a.send_eof()
    a.send_eof()  # idempotent: must not raise
    _expect_raises(
        ClosedResourceError, lambda: a.sendall(b"x", timeout=PATIENCE), "sendall after send_eof()"
    )
    _expect_raises(
        ClosedResourceError,
        lambda: a.sendall(b"", timeout=PATIENCE),
        "sendall(b'') after send_eof()",
    )
    # Our own send_eof must not end our receiving side.
    _expect_recv_timeout(
        pair,
        a,
        lambda: a.recv(timeout=SHORT_TIMEOUT),
        "recv after our own send_eof(), nothing sent",
    )
    received = _recv_until_eof(b, 7, "recv after the peer's send_eof()")
    _expect_same_bytes(received, b"request", "data sent before send_eof()")
    _expect_eof(b, "recv again after EOF")
    _expect_raises(EndOfStream, lambda: b.recv_line(timeout=PATIENCE), "recv_line after EOF")
    b.sendall(b"response\n", timeout=PATIENCE)
    _expect_equal(a.recv_line(timeout=PATIENCE), b"response", "reply received after our send_eof()")
    b.send_eof()
    _expect_eof(a, "recv after both sides sent EOF")
    a.send_eof()
    a.close()
    b.close()


def _check_send_eof_after_close(pair: _Pair[HalfCloseableStream]) -> None:
    a, b = pair.first, pair.second
    a.close()
    _expect_raises(ClosedResourceError, a.send_eof, "send_eof() after close()")
    # Closed wins over idempotence: EOF already sent, then closed, is still closed.
    b.send_eof()
    b.close()
    _expect_raises(ClosedResourceError, b.send_eof, "send_eof() after send_eof() and close()")


def _check_half_close_oracle(pair: _Pair[HalfCloseableStream]) -> None:
    a, b = pair.first, pair.second
    request = _payload(_BULK_SIZE + 12345, seed=10)
    reply = _payload(300_000, seed=11)

    def send_request() -> None:
        _send_in_pieces(a, request, seed=12)
        a.send_eof()

    def answer() -> bytes:
        digest = hashlib.sha256()
        size = 0
        for _ in range(len(request) + 1):
            chunk = b.recv(65536, timeout=PATIENCE)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        # The answer is sent after EOF, through the direction that is still open.
        b.sendall(b"%d %s\n" % (size, digest.hexdigest().encode()), timeout=PATIENCE)
        _send_in_pieces(b, reply, seed=13)
        b.send_eof()
        return digest.digest()

    sender = pair.start(f"{pair.labels[0]}: send then send_eof", send_request)
    oracle = pair.start(f"{pair.labels[1]}: hash until EOF then answer", answer)
    sender.result()
    summary = a.recv_line(max_bytes=200, timeout=PATIENCE)
    expected = b"%d %s" % (len(request), hashlib.sha256(request).hexdigest().encode())
    _expect(
        summary == expected,
        f"the peer received {summary.split(b' ')[0].decode(errors='replace')} bytes with "
        f"another sha256 than the {len(request)} bytes sent before send_eof()",
    )
    _expect_same_bytes(
        a.recv_exactly(len(reply), timeout=PATIENCE),
        reply,
        "data the peer sent after it saw our EOF",
    )
    _expect_eof(a, "recv after the peer's send_eof()")
    oracle.result()


_HALF_CLOSE_CHECKS: list[tuple[str, Callable[[_Pair[HalfCloseableStream]], None], bool]] = [
    ("send_eof is idempotent, forbids sendall, keeps receiving", _check_send_eof, True),
    ("send_eof after close", _check_send_eof_after_close, True),
    ("half-close oracle: the peer hashes until EOF, then answers", _check_half_close_oracle, True),
]
