"""The relay between two endpoints: open or accept the legs, pump, report.

``Relay(src, dst)`` takes two endpoints in the grammar of
:mod:`sockit.relay.grammar` and decides the shape of the relay from them:

* **neither listens** (``stdio tcp:host:80``, ``file:x tcp:...``): open ``src``, open
  ``dst``, pump once; :meth:`Relay.run` returns that connection's
  :class:`~sockit.relay.pump.PumpResult`.
* **``src`` listens** (``tcp-listen:8080 tcp:backend:80``): every accepted connection
  gets its own ``dst`` leg (a connect, a child) and pump, concurrently, until the relay
  is cancelled; no ``FD_SETSIZE`` ceiling (epoll). If ``dst`` cannot be shared
  (``stdio``, ``file:``) exactly one connection is served, then ``run`` returns.
* **``dst`` listens** too or instead: one connection is accepted on it and relayed.
* ``udp-listen`` relays to a datagram endpoint with one session per client
  (:mod:`sockit.relay.udp`).

A failed ``dst`` (refused, unresolvable, a program that does not exist) ends that
connection only: its client is reset and one line is logged. A listener survives every
connection; accept errors follow the servers' policy (transient ones ignored, fd
exhaustion backs off without spinning).

Logging (logger ``sockit.relay``): each connection's end at ``INFO`` with its 4-tuple,
byte counts both ways, duration and outcome; failures at ``WARNING``. Logger
``sockit.trace`` at ``DEBUG`` gets each socket operation as it happens (listen,
accept, connect, EOF, shutdown, reset, close) for ``--trace``.

Must never block the event loop, and never report a connection that did not end with
EOF both ways as clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockit.addr import SocketAddress
from sockit.addr.binding import set_linger_zero, set_nodelay
from sockit.relay._accepting import AcceptLoop
from sockit.relay.grammar import EndpointSpec, parse_relay_endpoint
from sockit.relay.legs import ChildLeg, fail_reason, open_leg, read_proxy_header
from sockit.relay.pump import Leg, Pump, PumpResult, SocketLeg
from sockit.serve.exec import DEFAULT_KILL_GRACE

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockit.relay.udp import UDPRelayStats, UDPSessionRelay
    from sockit.sync import SocketListener

__all__ = [
    "Relay",
    "RelayStats",
    "accept_leg",
    "arun",
    "listen_on",
    "raise_fd_limit",
    "run",
    "serve_workers",
    "trace_pump_event",
]

_logger = logging.getLogger("sockit.relay")
_tracer = logging.getLogger("sockit.trace")

_UNSHARED = frozenset({"stdio", "file"})


@dataclass
class RelayStats:
    """Counts over a relay's life (a listening relay updates them as it goes)."""

    connections: int = 0
    clean: int = 0
    failed: int = 0
    refused: int = 0
    active: int = 0
    bytes_forward: int = 0
    bytes_backward: int = 0


def _spec(endpoint: str | EndpointSpec) -> EndpointSpec:
    return endpoint if isinstance(endpoint, EndpointSpec) else parse_relay_endpoint(endpoint)


class Relay:
    """A relay from ``src`` to ``dst`` (strings in the endpoint grammar, or specs).

    ``splice=False`` forces the copy path (for tests and comparisons). ``kill_grace``
    is the time an ``exec:`` child gets between ``SIGTERM`` and ``SIGKILL``. A listening
    relay resets the connections ``admit(address)`` refuses (the allow/deny policy) at
    accept. Use ``await relay.start()`` to bind (it returns the real listening addresses), then
    ``await relay.run()``; or just ``run()``, which starts first.

    Raises (from the constructor) :class:`~sockit.AddressError` for a malformed
    endpoint or an unsupported pair (a ``udp-listen`` relayed to a stream).
    """

    def __init__(
        self,
        src: str | EndpointSpec,
        dst: str | EndpointSpec,
        *,
        splice: bool = True,
        kill_grace: float = DEFAULT_KILL_GRACE,
        logger: logging.Logger | None = None,
        listener: SocketListener | None = None,
        admit: Callable[[SocketAddress], bool] | None = None,
    ) -> None:
        from sockit.errors import AddressError  # noqa: PLC0415

        self.src = _spec(src)
        self.dst = _spec(dst)
        if self.dst.kind == "udp-listen" or (
            self.src.kind == "udp-listen" and not self.dst.datagram
        ):
            raise AddressError(
                f"cannot relay {self.src} to {self.dst}: udp-listen is relayed to a datagram "
                "endpoint (udp: or unix-dgram:), as the first endpoint"
            )
        self.splice = splice
        self.kill_grace = kill_grace
        self.logger = logger or _logger
        self.admit = admit
        self.stats = RelayStats()
        # A listener handed in (a worker's inherited copy) is not ours to close as a
        # listener: that would remove a UNIX socket file the other workers still serve.
        self._listener: SocketListener | None = listener
        self._owns_listener = listener is None
        self._dst_listener: SocketListener | None = None
        self._udp: UDPSessionRelay | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._children: set[ChildLeg] = set()
        self._started = False
        self._closed = False
        self._capacity = 1 << 30  # set by start() for a listening relay
        self._accepting: AcceptLoop | None = None
        self._serving: asyncio.Future[None] | None = None
        self._trace = _tracer.isEnabledFor(logging.DEBUG)

    # --- set-up -------------------------------------------------------------------------

    @property
    def addresses(self) -> list[SocketAddress]:
        """The real bound addresses of the listening endpoint(s) (empty if none)."""
        result: list[SocketAddress] = []
        for listener in (self._listener, self._dst_listener):
            if listener is not None:
                result.extend(listener.addresses)
        if self._udp is not None:
            result.extend(self._udp_addresses)
        return result

    @property
    def udp_stats(self) -> UDPRelayStats | None:
        """The UDP session counts of a ``udp-listen`` relay (``None`` for others)."""
        return None if self._udp is None else self._udp.stats

    async def start(self) -> list[SocketAddress]:
        """Bind the listening endpoint(s); return the real addresses (port 0 resolved).

        Raises ``OSError`` (``EADDRINUSE``...) if binding fails; nothing stays open.
        """
        if self._started:
            return self.addresses
        self._started = True
        self._udp_addresses: list[SocketAddress] = []
        if self.src.listening:
            self._capacity = _fd_capacity(self.dst)
        try:
            if self.src.kind == "udp-listen":
                from sockit.relay.udp import UDPSessionRelay  # noqa: PLC0415

                self._udp = UDPSessionRelay(self.src, self.dst, logger=self.logger)
                self._udp_addresses = await self._udp.start()
            elif self.src.listening and self._listener is None:
                self._listener = _listen(self.src)
            if self.dst.listening:
                self._dst_listener = _listen(self.dst)
        except BaseException:
            await self.aclose()
            raise
        for address in self.addresses:
            self._trace_line(f"listen {address}")
        return self.addresses

    # --- running ------------------------------------------------------------------------

    async def run(self) -> PumpResult | None:
        """Relay until done: a one-shot relay returns its :class:`PumpResult`; a
        listening relay serving many connections runs until cancelled (then returns
        nothing: cancellation propagates after every connection was aborted and every
        child reaped)."""
        await self.start()
        try:
            if self._udp is not None:
                await self._udp.serve_forever()
                return None
            if (
                self._listener is not None
                and self._dst_listener is None
                and self.dst.kind not in _UNSHARED
            ):
                await self._serve_many(self._listener)
                return None
            return await self._one_connection()
        finally:
            await self.aclose()

    async def _serve_many(self, listener: SocketListener) -> None:
        serving = self._serving = asyncio.get_running_loop().create_future()

        def fatal(error: OSError) -> None:
            if not serving.done():
                serving.set_exception(error)

        self._accepting = AcceptLoop(
            listener, self._accepted, fatal, logger=self.logger, admit=self.admit
        )
        self._accepting.start()
        await serving

    def _accepted(self, conn: socket.socket, sockaddr: object) -> None:
        limit = self.src.options.max_conns
        remote = SocketAddress.from_sockaddr(conn.family, sockaddr)
        if limit is not None and self.stats.active >= limit:
            # Counted here, at accept, not when the task first runs: a burst accepted
            # in one batch must see the connections accepted before it.
            # Refused at once (reset), not queued: the client learns now.
            self.stats.refused += 1
            with contextlib.suppress(OSError):
                set_linger_zero(conn)
            conn.close()
            self._trace_line(f"refuse {remote} (max-conns {limit})")
            return
        if conn.family != socket.AF_UNIX:
            set_nodelay(conn)
        leg = SocketLeg(conn, str(remote))
        leg.set_addresses(None, remote)
        self._trace_line(f"accept {remote}")
        self.stats.connections += 1
        self.stats.active += 1
        if self.stats.active >= self._capacity and self._accepting is not None:
            # Out of file descriptors for one more connection: stop accepting (the
            # kernel queues new clients, another worker may take them) until one ends,
            # rather than accept and reset them.
            self._accepting.hold(held=True)
        task = asyncio.get_running_loop().create_task(self._serve_connection(leg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_connection(self, client: SocketLeg) -> None:
        try:
            await self._relay_from(client, self.dst)
        finally:
            self.stats.active -= 1
            if self._accepting is not None and self.stats.active < self._capacity:
                self._accepting.hold(held=False)

    async def _relay_from(self, client: SocketLeg, dst: EndpointSpec) -> PumpResult | None:
        """Read the client's PROXY header if asked, open ``dst``, pump; one log line."""
        try:
            if self.src.options.proxy_protocol is not None:
                await read_proxy_header(client)
            other = await self._open(dst, peer=client, first=False)
        except Exception as error:  # noqa: BLE001 (any failure ends this connection only)
            self.stats.failed += 1
            if isinstance(error, OSError) and error.errno in _FD_EXHAUSTED and self._accepting:
                self._accepting.back_off(error)
            self.logger.warning(
                "%s: cannot relay to %s: %s",
                client.name,
                dst,
                fail_reason(error),
                extra={"event": "relay_failed", "peer": client.name, "target": str(dst)},
            )
            self._trace_line(f"abort {client.name} (RST)")
            client.abort()
            return None
        return await self._pump(client, other)

    async def _open(self, spec: EndpointSpec, *, peer: Leg | None, first: bool) -> Leg:
        if self._trace:
            verb = "spawn" if spec.kind in {"exec", "sh"} else "open"
            self._trace_line(f"{'connect' if spec.is_socket else verb} {spec}")
        leg = await open_leg(spec, peer=peer, first=first, kill_grace=self.kill_grace)
        if self._trace and isinstance(leg, SocketLeg):
            self._trace_line(f"connected {leg.describe()}")
        return leg

    async def _pump(self, a: Leg, b: Leg) -> PumpResult:
        if isinstance(b, ChildLeg):
            self._children.add(b)
        if isinstance(a, ChildLeg):
            self._children.add(a)
        if self._trace or self.logger.isEnabledFor(logging.INFO):
            # The 4-tuple, while the sockets are open (the log line comes after close).
            for leg in (a, b):
                _ = leg.local_address, leg.remote_address
            self._trace_line(f"relay {a.describe()} <-> {b.describe()}")
        pump = Pump(
            a,
            b,
            idle_timeout=_first(self.src.options.idle_timeout, self.dst.options.idle_timeout),
            close_wait=_first(self.src.options.close_wait, self.dst.options.close_wait),
            splice=self.splice,
            on_event=self._on_pump_event if self._trace else None,
        )
        result = await pump.run()
        self.stats.bytes_forward += result.sent_a_to_b
        self.stats.bytes_backward += result.sent_b_to_a
        if result.clean:
            self.stats.clean += 1
        else:
            self.stats.failed += result.outcome == "reset"
        self._log_result(a, b, result, one_shot=self._serving is None)
        for leg in (a, b):
            if isinstance(leg, ChildLeg):
                await leg.reaped
                self._children.discard(leg)
        return result

    async def _one_connection(self) -> PumpResult | None:
        """Accept or open both legs once, pump once."""
        a: Leg | None = None
        b: Leg | None = None
        try:
            if self._listener is not None:
                a = await self._accept_one(self._listener)
            if self._dst_listener is not None:
                b = await self._accept_one(self._dst_listener)
            if a is None:
                a = await self._open(self.src, peer=b, first=True)
            if b is None:
                if isinstance(a, SocketLeg) and self.src.options.proxy_protocol is not None:
                    await read_proxy_header(a)
                b = await self._open(self.dst, peer=a, first=False)
        except BaseException:
            for leg in (a, b):
                if leg is not None:
                    leg.abort()
            raise
        self.stats.connections += 1
        return await self._pump(a, b)

    async def _accept_one(self, listener: SocketListener) -> SocketLeg:
        leg = await accept_leg(listener, logger=self.logger)
        self._trace_line(f"accept {leg.remote_address}")
        return leg

    # --- the end ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop listening, abort every connection, reap every child (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._accepting is not None:
            self._accepting.close()
        for listener in (self._listener, self._dst_listener):
            if listener is not None and not listener.closed:
                if listener is self._listener and not self._owns_listener:
                    for sock in listener.sockets:
                        sock.close()
                else:
                    listener.close()
        if self._udp is not None:
            await self._udp.aclose()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for child in list(self._children):
            child.abort()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(child.reaped)

    # --- reporting ----------------------------------------------------------------------

    def _log_result(self, a: Leg, b: Leg, result: PumpResult, *, one_shot: bool) -> None:
        # A reset is a warning among many connections; a one-shot relay's caller
        # reports its own result (the CLI's exit line), so then it is information.
        level = logging.WARNING if result.outcome == "reset" and not one_shot else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        detail = result.outcome
        if result.outcome == "reset":
            reason = fail_reason(result.error) if result.error is not None else "reset"
            detail = f"{result.failed_leg}: {reason}"
        self.logger.log(
            level,
            "%s <-> %s: %d bytes sent, %d bytes received in %.3f s (%s)",
            a.describe(),
            b.describe(),
            result.sent_a_to_b,
            result.sent_b_to_a,
            result.duration,
            detail,
            extra={
                "event": "relay_done",
                "a": a.describe(),
                "b": b.describe(),
                "bytes_a_to_b": result.sent_a_to_b,
                "bytes_b_to_a": result.sent_b_to_a,
                "duration": round(result.duration, 6),
                "outcome": result.outcome,
            },
        )

    def _on_pump_event(self, name: str, leg: Leg, detail: str) -> None:
        trace_pump_event(name, leg, detail)

    def _trace_line(self, text: str) -> None:
        if self._trace:
            _tracer.debug("%s", text, extra={"event": "trace"})


_EVENT_WORDS = {
    "eof": "EOF from",
    "shutdown": "shutdown(SHUT_WR) to",
    "reset": "RST/error on",
    "abort": "abort (SO_LINGER 0) of",
    "close": "close of",
    "datagram-error": "datagram error on",
}


def trace_pump_event(name: str, leg: Leg, detail: str = "") -> None:
    """A :class:`~sockit.relay.pump.Pump` event as a ``--trace`` line (the
    ``sockit.trace`` logger, at ``DEBUG``): ``EOF from 127.0.0.1:5000 -> ...``."""
    text = f"{_EVENT_WORDS.get(name, name)} {leg.describe()}" + (f": {detail}" if detail else "")
    _tracer.debug("%s", text, extra={"event": "trace"})


_FD_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})
# Descriptors kept free for everything but connections: the listener, the event loop,
# logging, stdio, pooled splice pipes, a child's pidfd.
_FD_RESERVE = 256


def raise_fd_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; the new soft limit.

    For programs that serve many connections (the CLI calls it): the soft limit is often
    1024, a leftover of ``select()``'s ``FD_SETSIZE`` that epoll does not have. A
    library call does not change process limits behind its caller's back.
    """
    import resource  # noqa: PLC0415 (POSIX only)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _fd_capacity(target: EndpointSpec) -> int:
    """How many relayed connections this process's fd limit holds: two sockets each,
    or a socket and two pipes for a child (splice pipes are taken only while bytes
    flow, and a direction copies instead when none can be had)."""
    import resource  # noqa: PLC0415 (POSIX only; rarely needed)

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    per_connection = 3 if target.kind in {"exec", "sh"} else 2
    return max(1, (soft - _FD_RESERVE) // per_connection)


def _first(*values: float | None) -> float | None:
    for value in values:
        if value is not None:
            return value
    return None


async def accept_leg(
    listener: SocketListener,
    *,
    logger: logging.Logger = _logger,
    admit: Callable[[SocketAddress], bool] | None = None,
) -> SocketLeg:
    """Accept one connection on ``listener`` as a leg (``TCP_NODELAY``, its peer address
    recorded), then close the listener: later connects are refused at once instead of
    waiting in a queue nobody will accept. Accept errors follow :class:`AcceptLoop`'s
    policy; a fatal one is raised. Connections ``admit`` refuses are reset and the wait
    goes on."""
    got: asyncio.Future[tuple[socket.socket, object]]
    got = asyncio.get_running_loop().create_future()

    def on_accept(conn: socket.socket, sockaddr: object) -> None:
        accepting.close()
        got.set_result((conn, sockaddr))

    def fatal(error: OSError) -> None:
        if not got.done():
            got.set_exception(error)

    accepting = AcceptLoop(listener, on_accept, fatal, logger=logger, admit=admit)
    accepting.start()
    try:
        conn, sockaddr = await got
    finally:
        accepting.close()
    listener.close()
    remote = SocketAddress.from_sockaddr(conn.family, sockaddr)
    if conn.family != socket.AF_UNIX:
        set_nodelay(conn)
    leg = SocketLeg(conn, str(remote))
    leg.set_addresses(None, remote)
    return leg


def listen_on(spec: EndpointSpec) -> SocketListener:
    """The bound listener of a ``tcp-listen`` or ``unix-listen`` endpoint (its ``mode``
    and ``backlog`` applied)."""
    return _listen(spec)


def _listen(spec: EndpointSpec) -> SocketListener:
    from sockit.sync import listen, listen_unix  # noqa: PLC0415 (binding only)

    if spec.kind == "unix-listen":
        assert spec.path is not None  # noqa: S101
        return listen_unix(spec.path, mode=spec.options.mode, backlog=spec.options.backlog)
    assert spec.port is not None  # noqa: S101
    return listen(spec.port, spec.host, backlog=spec.options.backlog)


def serve_workers(
    src: str | EndpointSpec,
    dst: str | EndpointSpec,
    workers: int,
    *,
    ready: Callable[[list[SocketAddress]], None] | None = None,
    logger: logging.Logger | None = None,
    **options: object,
) -> None:
    """A listening relay in ``workers`` processes: bind once, fork the workers, each
    relaying connections from the shared listener on its own event loop (the serve
    issue's supervisor: a crashed worker is restarted; see
    :mod:`sockit.serve._workers`). Returns after SIGINT/SIGTERM (a first signal
    stops accepting and stops every worker, which aborts its connections; a second
    kills them) once every worker is reaped.

    Spreads the connections (and their fds: each process has its own ``RLIMIT_NOFILE``)
    and the relaying CPU over the processes. Must be called from the main thread.
    """
    from sockit.aio._loop import run as run_loop  # noqa: PLC0415
    from sockit.serve._signals import install_shutdown_handlers  # noqa: PLC0415
    from sockit.serve._workers import SharedCounters, WorkersRunner  # noqa: PLC0415

    source, target = _spec(src), _spec(dst)
    if source.kind not in {"tcp-listen", "unix-listen"} or target.kind in _UNSHARED:
        raise ValueError("workers need a tcp-listen or unix-listen source and a shareable target")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    log = logger or _logger
    listener = _listen(source)
    try:
        if ready is not None:
            ready(listener.addresses)

        def run_worker(counters: object) -> None:
            del counters  # the relay keeps its own counts

            async def main() -> None:
                relay = Relay(source, target, listener=listener, logger=log, **options)  # type: ignore[arg-type]
                task = asyncio.current_task()
                assert task is not None  # noqa: S101
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, task.cancel)
                with contextlib.suppress(asyncio.CancelledError):
                    await relay.run()

            run_loop(main())

        runner = WorkersRunner(
            count=workers,
            listener=listener,
            logger=log,
            shared=SharedCounters(workers + 1),
            run_worker=run_worker,
        )
        signals_seen: list[int] = []

        def on_signal(signum: int) -> None:
            signals_seen.append(signum)
            if len(signals_seen) == 1:
                runner.stop_accepting()
            else:
                runner.abort()

        restore = install_shutdown_handlers(on_signal)
        try:
            runner.serve()
            runner.wait_closed()
        finally:
            restore()
    finally:
        listener.close()


async def arun(
    src: str | EndpointSpec, dst: str | EndpointSpec, **options: object
) -> PumpResult | None:
    """``await Relay(src, dst, **options).run()``."""
    return await Relay(src, dst, **options).run()  # type: ignore[arg-type]


def run(
    src: str | EndpointSpec,
    dst: str | EndpointSpec,
    *,
    ready: Callable[[list[SocketAddress]], None] | None = None,
    **options: object,
) -> PumpResult | None:
    """Relay ``src`` to ``dst`` on a new event loop (uvloop when installed); see
    :class:`Relay`. ``ready(addresses)`` is called once the listening endpoints are
    bound. A one-shot relay returns its :class:`PumpResult`; a listening relay runs
    until interrupted (``KeyboardInterrupt`` ends it after aborting every connection).
    """
    from sockit.aio._loop import run as run_loop  # noqa: PLC0415

    async def main() -> PumpResult | None:
        relay = Relay(src, dst, **options)  # type: ignore[arg-type]
        addresses = await relay.start()
        if ready is not None:
            ready(addresses)
        return await relay.run()

    return run_loop(main())
