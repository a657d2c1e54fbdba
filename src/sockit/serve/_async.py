"""The ``"async"`` serving mode: one event loop, one task per connection.

Implements :class:`sockit.serve.server.ModeRunner` on :mod:`sockit.aio` (uvloop when
installed). The loop runs in the serving thread; the control thread reaches it only
through ``call_soon_threadsafe``. The same contracts as the blocking modes hold:

* the access policy and ``max_connections`` are applied at accept, refused connections
  are closed at once (after reading what already arrived, so the close is a FIN);
* a handler exception is logged with the 4-tuple and ends only its connection; a
  ``TimeoutError`` under ``idle_timeout`` is the limit at work (one info line);
* transient accept errors are retried, resource exhaustion (``EMFILE``...) backs off
  without spinning (10 ms doubling to 1 s, cut short when a connection ends and gives
  an fd back) and logs at most a line a second;
* ``stop_accepting`` refuses new connects at once; ``wait_closed`` keeps the loop
  running until every handler has finished; ``abort`` resets every connection.

The built-in echo and discard services take a faster path when no per-connection
feature needs a stream (no PROXY header, no idle timeout): the loop's own server accepts
in C (libuv's accept loop under uvloop) and each connection is a bare protocol, as in a
hand-written uvloop server; the same policy, limit, counting, drain and abort apply.

Must never block the loop: no blocking socket call runs on it, and the PROXY header is
read with exact-size receives so no byte meant for the handler is read ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import threading
from typing import TYPE_CHECKING, cast

from sockit.addr import SocketAddress
from sockit.addr.binding import DEFAULT_BACKLOG, set_linger_zero
from sockit.aio import AsyncSocketListener, AsyncSocketStream, new_event_loop
from sockit.errors import ClosedResourceError, ProxyProtocolError
from sockit.proto.accept import AcceptAction, classify_accept_error
from sockit.proto.proxy import V2_SIGNATURE, parse_proxy_header
from sockit.serve._accept import (
    ABORT_READER_GRACE,
    PROXY_HEADER_TIMEOUT,
    Backoff,
    RateLimitedLog,
    Stat,
    log_accept_back_off,
    refuse_reason,
)
from sockit.serve.services import async_discard, async_echo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sockit.serve.server import ServeContext

__all__ = ["AsyncMode"]

# The longest PROXY v1 line, CRLF included (the specification's 107 bytes).
_V1_MAX = 107
_V2_FIXED = 16


class AsyncMode:
    """Serve every connection as a task on one event loop (see the module docstring)."""

    def __init__(self, context: ServeContext) -> None:
        self._context = context
        self._logger = context.logger
        self._counters = context.counters
        self._handler: Callable[[AsyncSocketStream], Awaitable[object]] = context.handler  # type: ignore[assignment]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: AsyncSocketListener | None = None
        self._stopping = False
        self._stop_lock = threading.Lock()
        self._tasks: dict[int, tuple[asyncio.Task[None], AsyncSocketStream]] = {}
        self._aborting: set[int] = set()
        self._numbers = itertools.count(1)
        self._backoff = Backoff()
        self._resource_log = RateLimitedLog(context.logger)
        self._limit_log = RateLimitedLog(context.logger)
        self._all_done = threading.Event()
        self._all_done.set()
        self._connection_ended: asyncio.Event | None = None
        # The built-in service's protocol, when the faster path applies.
        self._fast: type[_ServiceProtocol] | None = None
        if not context.proxy_protocol and context.idle_timeout is None:
            self._fast = _FAST_SERVICES.get(context.handler)
        self._servers: list[asyncio.AbstractServer] = []
        self._transports: set[asyncio.Transport] = set()
        self._stop_event: asyncio.Event | None = None

    # --- ModeRunner ------------------------------------------------------------------

    def serve(self) -> None:
        """Run the loop and accept until :meth:`stop_accepting`."""
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._accept_loop())
        except BaseException:
            self._close_loop()
            raise

    def stop_accepting(self) -> None:
        """Refuse new connects now and end :meth:`serve`. Any thread; idempotent."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        listener = self._context.listener
        if not self._context.listener_shared:
            # Refused at once, even before the loop gets to close the sockets (a
            # listening socket shut down for reading stops accepting, whoever holds it).
            for sock in listener.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._close_listeners)
                return
        self._close_listeners()

    def wait_closed(self) -> None:
        """Keep the loop running until every connection task has ended; close it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.run_until_complete(self._wait_tasks())
        finally:
            self._close_loop()

    def abort(self) -> None:
        """Reset every live connection (RST) and wait briefly for the tasks to end."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._abort_on_loop)
        self._all_done.wait(ABORT_READER_GRACE * 2)

    # --- on the loop ---------------------------------------------------------------

    def _close_listeners(self) -> None:
        if self._listener is not None:
            self._listener.close_now()  # unregisters from the loop before closing
        for server in self._servers:
            server.close()  # stops the loop's own accepting, closes its sockets
        if self._stop_event is not None:
            self._stop_event.set()
        self._context.listener.close()  # the same sockets, plus a UNIX file we own

    async def _accept_loop(self) -> None:
        self._connection_ended = asyncio.Event()
        self._stop_event = asyncio.Event()
        if self._stopping:
            return
        if self._fast is not None:
            await self._serve_protocols(self._fast)
            return
        listener = AsyncSocketListener(self._context.listener.sockets)
        self._listener = listener
        while not self._is_stopping():
            try:
                stream = await listener.accept()
            except ClosedResourceError:
                if self._is_stopping():
                    return
                raise
            except OSError as error:
                if self._is_stopping():
                    return
                action = classify_accept_error(error.errno)
                if action is AcceptAction.RETRY:
                    continue
                if action is AcceptAction.BACK_OFF:
                    await self._back_off(error)
                    continue
                raise
            self._backoff.reset()
            await self._admit(stream)

    def _is_stopping(self) -> bool:
        # A method, not the attribute: another thread sets it while the loop runs.
        return self._stopping

    async def _back_off(self, error: OSError) -> None:
        delay = self._backoff.next_delay()
        log_accept_back_off(self._counters, self._resource_log, error, delay)
        ended = self._connection_ended
        if ended is None:
            await asyncio.sleep(delay)
            return
        ended.clear()
        # A connection that ends gives an fd back: try accept again at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), delay)

    async def _admit(self, stream: AsyncSocketStream) -> None:
        counters = self._counters
        if refuse_reason(self._context, counters, stream.remote_address, self._limit_log):
            await _close_refused(stream)
            return
        number = next(self._numbers)
        counters.add(Stat.ACTIVE)
        counters.add(Stat.ACCEPTED)
        self._all_done.clear()
        task = asyncio.get_running_loop().create_task(self._run(number, stream))
        self._tasks[number] = (task, stream)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("accepted %s", _label(stream))

    async def _run(self, number: int, stream: AsyncSocketStream) -> None:
        context = self._context
        logger = self._logger
        # The 4-tuple for log lines, made only when one is written: getsockname is a
        # syscall, and most connections never log anything.
        label: str | None = None
        stream.timeout = context.idle_timeout
        try:
            if context.proxy_protocol:
                proxied = await self._apply_proxy_header(stream, _label(stream))
                if proxied is None:
                    self._aborting.add(number)
                    self._counters.add(Stat.ERRORS)
                    return
                label = proxied
            await self._handler(stream)
        except Exception as error:
            if label is None:
                label = _label(stream)
            if number in self._aborting:
                logger.debug("connection %s ended by the abort", label, exc_info=True)
            elif isinstance(error, TimeoutError) and context.idle_timeout is not None:
                logger.info(
                    "connection %s timed out (idle_timeout=%g s): %s",
                    label,
                    context.idle_timeout,
                    error,
                )
            else:
                self._counters.add(Stat.ERRORS)
                logger.exception("handler failed on connection %s", label)
        finally:
            try:
                if number in self._aborting:
                    stream.abort()
                else:
                    with contextlib.suppress(Exception):
                        await stream.aclose()
            finally:
                self._tasks.pop(number, None)
                self._aborting.discard(number)
                self._counters.add(Stat.ACTIVE, -1)
                if self._connection_ended is not None:
                    self._connection_ended.set()
                if not self._tasks:
                    self._all_done.set()

    async def _apply_proxy_header(self, stream: AsyncSocketStream, label: str) -> str | None:
        """Read the PROXY header exactly (no read-ahead); None if there is none."""
        timeout = PROXY_HEADER_TIMEOUT
        if self._context.idle_timeout is not None:
            timeout = min(timeout, self._context.idle_timeout)
        try:
            async with asyncio.timeout(timeout):
                header = parse_proxy_header(await _read_proxy_bytes(stream))
            if header is None:
                raise ProxyProtocolError("incomplete PROXY protocol header")
        except (ProxyProtocolError, TimeoutError, EOFError, OSError) as error:
            self._logger.warning(
                "no valid PROXY protocol header on connection %s: %s", label, error
            )
            return None
        if header.source is None or header.destination is None:
            return label  # LOCAL or UNKNOWN: a health check, keep the real addresses
        proxy = stream.remote_address
        stream.set_addresses(local=header.destination, remote=header.source)
        return f"{_label(stream)} (via proxy {proxy})"

    async def _wait_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(
                *(task for task, _ in list(self._tasks.values())), return_exceptions=True
            )
        ended = self._connection_ended
        while self._transports and ended is not None:
            ended.clear()
            await ended.wait()

    # --- the faster path of the built-in services ----------------------------------

    async def _serve_protocols(self, protocol: type[_ServiceProtocol]) -> None:
        loop = asyncio.get_running_loop()
        stop = self._stop_event
        for sock in self._context.listener.sockets:
            # backlog: create_server listens again; keep the system maximum.
            server = await loop.create_server(
                lambda: protocol(self), sock=sock, backlog=DEFAULT_BACKLOG
            )
            self._servers.append(server)
        if stop is not None and not self._stopping:
            await stop.wait()

    def _admit_transport(self, transport: asyncio.Transport) -> bool:
        """Apply the policy and the limit to a connection the loop accepted."""
        counters = self._counters
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        remote = SocketAddress.from_sockaddr(sock.family, peer) if sock is not None else None
        if refuse_reason(self._context, counters, remote, self._limit_log):
            transport.close()
            return False
        counters.add(Stat.ACTIVE)
        counters.add(Stat.ACCEPTED)
        self._transports.add(transport)
        self._all_done.clear()
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("accepted %s", remote)
        return True

    def _transport_ended(self, transport: asyncio.Transport) -> None:
        self._transports.discard(transport)
        self._counters.add(Stat.ACTIVE, -1)
        if self._connection_ended is not None:
            self._connection_ended.set()
        if not self._transports and not self._tasks:
            self._all_done.set()

    def _abort_on_loop(self) -> None:
        for number, (task, stream) in list(self._tasks.items()):
            self._aborting.add(number)
            stream.abort()
            task.cancel()
        for transport in list(self._transports):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                set_linger_zero(sock)
            transport.abort()

    def _close_loop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            if self._listener is not None:
                self._listener.close_now()
            loop.close()
            self._all_done.set()


async def _read_proxy_bytes(stream: AsyncSocketStream) -> bytes:
    """The bytes of one PROXY header, read with exact sizes so nothing after it is
    consumed: v2 is a 16-byte fixed part announcing its length, v1 a line."""
    start = await stream.recv_exactly(12)
    if start == V2_SIGNATURE:
        fixed = await stream.recv_exactly(_V2_FIXED - 12)
        length = int.from_bytes(fixed[2:4], "big")
        return start + fixed + await stream.recv_exactly(length)
    if not start.startswith(b"PROXY "):
        raise ProxyProtocolError("the connection does not start with a PROXY header")
    rest = await stream.recv_until(b"\r\n", max_bytes=_V1_MAX - len(start) - 2)
    return start + rest + b"\r\n"


def _label(stream: AsyncSocketStream) -> str:
    try:
        return f"{stream.remote_address} -> {stream.local_address}"
    except OSError:
        return "(addresses unknown)"


async def _close_refused(stream: AsyncSocketStream) -> None:
    """Close a refused connection with a FIN where possible (see
    :func:`sockit.serve._accept.close_refused`): drop what already arrived first. The
    stream was never used, so this closes its socket without a loop round trip."""
    with contextlib.suppress(OSError):
        stream.socket.recv(65536, socket.MSG_DONTWAIT)
    await stream.aclose()


class _ServiceProtocol(asyncio.Protocol):
    """One connection of a built-in service on the faster path."""

    def __init__(self, mode: AsyncMode) -> None:
        self._mode = mode
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transports are full transports (asyncio's and uvloop's).
        stream_transport = cast("asyncio.Transport", transport)
        if self._mode._admit_transport(stream_transport):
            self._transport = stream_transport

    def eof_received(self) -> bool:
        # False: the transport closes itself once what is queued was sent, so the
        # client gets every byte and then EOF (the stream handlers' send_eof + close).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._mode._transport_ended(self._transport)
            self._transport = None


class _EchoProtocol(_ServiceProtocol):
    """RFC 862 echo: every byte back; reading pauses while the client does not read, so
    a client that never reads cannot make the server buffer without bound."""

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()


class _DiscardProtocol(_ServiceProtocol):
    """RFC 863 discard: read and drop."""

    def data_received(self, data: bytes) -> None:
        del data


_FAST_SERVICES: dict[object, type[_ServiceProtocol]] = {
    async_echo: _EchoProtocol,
    async_discard: _DiscardProtocol,
}
