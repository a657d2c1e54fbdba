"""Fake resolver and fake socket factory: deterministic connect tests with a virtual clock.

``FakeSocketFactory`` hands out sockets that never touch the network: each one is a
real (unconnected) socket object, so closing and leaks are real, but ``connect_ex``
only records the attempt and its outcome comes from a script (succeed, fail with an
errno, or hang) after a scripted delay on a virtual clock. ``wait_writable`` jumps the
clock to the next scripted event instead of sleeping, so a Happy Eyeballs test can
assert the exact start time of every attempt and runs in microseconds. It can also
inject ``accept`` errors on listeners it created, for server tests.

``FakeResolver`` answers from a table, in the order given, and records every lookup.

Must never send a packet: fake sockets are never bound or connected for real.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field
from typing import TypeAlias

from sockit.addr import AddrInfo, SocketAddress, check_host
from sockit.errors import ResolutionError

SocketObject: TypeAlias = socket.socket
"""``socket.socket``, named so a method called ``socket`` does not shadow it."""

__all__ = [
    "Fail",
    "FakeResolver",
    "FakeSocket",
    "FakeSocketFactory",
    "Hang",
    "Succeed",
]


@dataclass(frozen=True)
class Succeed:
    """The connect completes successfully ``after`` seconds (virtual)."""

    after: float = 0.0


@dataclass(frozen=True)
class Fail:
    """The connect fails with ``errno`` ``after`` seconds (virtual); ``after=None`` makes
    ``connect_ex`` itself fail at once (like ``ENETUNREACH`` with no route)."""

    after: float | None = 0.0
    errno: int = errno.ECONNREFUSED


@dataclass(frozen=True)
class Hang:
    """The connect never completes (a black hole: SYNs dropped)."""


Outcome = Succeed | Fail | Hang


@dataclass
class AttemptRecord:
    """One connect attempt seen by the fake factory."""

    address: str
    started: float
    socket: FakeSocket
    local: str | None = None


class FakeSocket(socket.socket):
    """A real, never-connected socket whose connect outcome is scripted."""

    _factory: FakeSocketFactory
    _outcome: Outcome | None
    _completes_at: float | None
    _peer: object
    _bound: object

    def _init_fake(self, factory: FakeSocketFactory) -> None:
        self._factory = factory
        self._outcome = None
        self._completes_at = None
        self._peer = None
        self._bound = None

    def bind(self, address: object, /) -> None:
        """Record the local address; never binds for real."""
        self._bound = address

    def connect_ex(self, address: object, /) -> int:
        """Record the attempt at the current virtual time; outcome per the script."""
        factory = self._factory
        text = str(SocketAddress.from_sockaddr(self.family, address))
        local = None
        if self._bound is not None:
            local = str(SocketAddress.from_sockaddr(self.family, self._bound))
        factory.attempts.append(AttemptRecord(text, factory.now, self, local))
        outcome = factory.outcome_for(text)
        self._outcome = outcome
        self._peer = address
        if isinstance(outcome, Hang):
            self._completes_at = None
            return errno.EINPROGRESS
        if isinstance(outcome, Fail) and outcome.after is None:
            return outcome.errno  # connect_ex itself fails, like ENETUNREACH
        if outcome.after is None:  # pragma: no cover (only Fail allows None)
            raise TypeError(f"bad outcome {outcome!r}")
        self._completes_at = factory.now + outcome.after
        return errno.EINPROGRESS

    def connect(self, address: object, /) -> None:
        """Blocking connect: fails unless scripted to succeed immediately."""
        code = self.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        outcome = self._outcome
        if isinstance(outcome, Fail):
            raise OSError(outcome.errno, os.strerror(outcome.errno))
        if isinstance(outcome, Hang):
            raise TimeoutError("fake connect hangs")

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> int:  # type: ignore[override]
        """``SO_ERROR`` reports the scripted outcome; anything else is real."""
        if level == socket.SOL_SOCKET and option == socket.SO_ERROR:
            outcome = self._outcome
            if isinstance(outcome, Fail):
                return outcome.errno
            return 0
        if buflen is None:
            return super().getsockopt(level, option)
        return super().getsockopt(level, option, buflen)  # type: ignore[return-value]

    def getpeername(self) -> object:
        """The address the fake connect was made to."""
        if self._peer is None:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        return self._peer

    def getsockname(self) -> object:
        """The recorded local address, or the family's wildcard."""
        if self._bound is not None:
            return self._bound
        if self.family == socket.AF_INET6:
            return ("::", 0, 0, 0)
        return ("0.0.0.0", 0)

    def completed(self, now: float) -> bool:
        """Whether the scripted connect has finished by virtual time ``now``."""
        return self._completes_at is not None and self._completes_at <= now


@dataclass
class FakeSocketFactory:
    """A :class:`sockit.sync.SocketFactory` with a virtual clock and scripted connects.

    ``script`` maps ``"host:port"`` / ``"[v6]:port"`` to an outcome; addresses not in
    it get ``default``. ``attempts`` lists every connect attempt with its virtual start
    time; ``sockets`` every socket handed out (so a test can check all losers were
    closed).
    """

    script: dict[str, Outcome] = field(default_factory=dict)
    default: Outcome = field(default_factory=Hang)
    now: float = 0.0
    attempts: list[AttemptRecord] = field(default_factory=list)
    sockets: list[FakeSocket] = field(default_factory=list)

    def outcome_for(self, address: str) -> Outcome:
        """The scripted outcome of a connect to ``address``."""
        return self.script.get(address, self.default)

    def socket(self, family: int, type: int, proto: int = 0) -> SocketObject:
        """A fresh :class:`FakeSocket` of the real family and type."""
        sock = FakeSocket(family, type, proto)
        sock._init_fake(self)
        self.sockets.append(sock)
        return sock

    def wait_writable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """Advance the virtual clock to the next completion or the timeout."""
        fakes = [sock for sock in sockets if isinstance(sock, FakeSocket)]
        times = [sock._completes_at for sock in fakes if sock._completes_at is not None]
        events = [t for t in times if t >= self.now]
        next_event = min(events) if events else None
        if timeout is None and next_event is None:
            raise RuntimeError("deadlock: waiting forever on sockets that never complete")
        target = next_event
        if timeout is not None:
            limit = self.now + timeout
            target = limit if target is None else min(target, limit)
        if target is None:  # pragma: no cover (excluded by the deadlock check above)
            raise RuntimeError("no event and no timeout")
        self.now = max(self.now, target)
        return [sock for sock in fakes if sock.completed(self.now)]

    def wait_readable(
        self, sockets: list[SocketObject], timeout: float | None
    ) -> list[SocketObject]:
        """Fake sockets are never readable: advance the clock by ``timeout``."""
        if timeout is None:
            raise RuntimeError("deadlock: fake sockets never become readable")
        self.now += timeout
        return []

    def monotonic(self) -> float:
        """The virtual clock."""
        return self.now

    @property
    def open_sockets(self) -> list[FakeSocket]:
        """Sockets handed out and not yet closed."""
        return [sock for sock in self.sockets if sock.fileno() != -1]


class FakeResolver:
    """A :class:`sockit.addr.Resolver` answering from a table, in the given order.

    ``FakeResolver({"example.test": ["2001:db8::1", "192.0.2.1"]})``. Unknown names
    raise :class:`~sockit.ResolutionError`. IP literals resolve to themselves. Every
    call is recorded in ``calls`` as ``(host, port, family)``.
    """

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = {
            check_host(name): list(addresses) for name, addresses in (table or {}).items()
        }
        self.calls: list[tuple[str | None, int, int]] = []

    def getaddrinfo(
        self,
        host: str | None,
        port: int,
        *,
        family: int = 0,
        type: int = socket.SOCK_STREAM,
        flags: int = 0,
        timeout: float | None = None,
    ) -> list[AddrInfo]:
        """See :meth:`sockit.addr.Resolver.getaddrinfo`."""
        del flags, timeout
        self.calls.append((host, port, family))
        if host is None:
            addresses = ["::", "0.0.0.0"]
        elif host in self.table:
            addresses = self.table[host]
        elif _is_literal(host):
            addresses = [host]
        else:
            raise ResolutionError(host, "Name or service not known (fake resolver)")
        result = []
        for address in addresses:
            if ":" in address:
                info_family = socket.AF_INET6
                sockaddr: tuple[object, ...] = (address, port, 0, 0)
            else:
                info_family = socket.AF_INET
                sockaddr = (address, port)
            if family and family != info_family:
                continue
            result.append(AddrInfo(info_family, socket.SocketKind(type), 6, "", sockaddr))
        if not result:
            raise ResolutionError(host or "", "no address of the requested family")
        return result


def _is_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.split("%", 1)[0])
        except OSError:
            continue
        return True
    return False
