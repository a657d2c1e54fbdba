"""ncat's ``-l -k`` without ``-e``: one stdin and stdout shared by many clients.

:class:`Hub` accepts clients on a listener (the event loop's epoll: no ``FD_SETSIZE``
ceiling) and

* **broadcasts** what it reads from its local input (stdin) to every connected client,
  reading it only while at least one client is connected (ncat's way: what was typed
  before anyone connected goes to the first client, not to nobody);
* writes what **every client** sends to its local output (stdout), chunk by chunk as it
  arrives (chunks from different clients interleave, never split);
* on local EOF half-closes every client (``shutdown(SHUT_WR)``) and every client that
  connects later; a client's EOF or reset ends that client only;
* takes ncat's EOF options: ``local_input=False`` never reads stdin (``--recv-only``);
  ``half_close=False`` leaves clients open at local EOF (``--no-shutdown``);
  ``discard_clients`` drops what clients send (``--send-only``); ``end_on_local_eof``
  ends the hub once local EOF was passed to every client (``--send-only``);
  ``quit_after_eof`` ends it that many seconds after local EOF (``-q``);
* caps the clients at ``max_conns``: one more is closed at once (ncat's ``-m``);
* in **broker** mode (ncat's ``--broker``) relays each client's data to every other
  client instead of to the local output;
* in **chat** mode (ncat's ``--chat``, a broker) tags each line with its sender,
  ``<userN> ``, escapes control characters as ``\\ooo`` (so no client can move another's
  cursor or recolour its terminal) and announces arrivals and departures with ncat's
  ``<announce>`` lines. ``N`` counts connections from 1 and is never reused in a hub's
  life (ncat numbers users by file descriptor, which is reused).

Bounded: each client's pending output and the local output hold at most
``BUFFER_LIMIT`` bytes; while any is full, the side feeding it is not read (a slow
client slows the broadcast, or in broker mode every client's talk, never grows memory).

Must never block the event loop nor let one client's failure end the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sockit.addr import SocketAddress
from sockit.addr.binding import set_linger_zero
from sockit.relay._accepting import AcceptLoop

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockit.relay.pump import Leg
    from sockit.sync import SocketListener

__all__ = ["BUFFER_LIMIT", "Hub", "HubStats", "chat_escape"]

BUFFER_LIMIT = 256 * 1024
"""Pending bytes per client, and for the local output, before its source is paused."""

_READ_SIZE = 65536
# What chat passes through as it is: printable ASCII and the white space ncat keeps
# (isprint() or isspace() in the C locale); every other byte becomes \ooo.
_CHAT_KEEP = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\n\v\f\r")
_CHAT_TABLE = [bytes([byte]) if byte in _CHAT_KEEP else b"\\%03o" % byte for byte in range(256)]


def chat_escape(data: bytes) -> bytes:
    """``data`` with every byte that is not printable ASCII or white space written as a
    backslash and three octal digits (ncat's ``--chat`` filter: ESC becomes ``\\033``)."""
    if all(byte in _CHAT_KEEP for byte in data):
        return data
    return b"".join(_CHAT_TABLE[byte] for byte in data)


_logger = logging.getLogger("sockit.relay")


@dataclass
class HubStats:
    """Counts over the hub's life."""

    connections: int = 0
    refused: int = 0
    active: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class _Client:
    sock: socket.socket
    address: SocketAddress
    pending: bytearray = field(default_factory=bytearray)
    writing: bool = False
    eof_wanted: bool = False
    user: int = 0
    line_start: bool = True


class Hub:
    """Many clients on ``listener`` sharing ``local`` (stdin/stdout); see the module.

    ``on_connect(address)`` and ``on_disconnect(address)`` are told about each client
    (for ``-v``). ``await hub.run()`` serves until cancelled (then every client is
    aborted) or until an EOF option ends it (then every client is closed cleanly, after
    its pending bytes).
    ``chat=True`` implies ``broker=True``. Connections ``admit(address)`` refuses are
    reset at accept.
    """

    def __init__(
        self,
        listener: SocketListener,
        local: Leg,
        *,
        max_conns: int = 100,
        broker: bool = False,
        chat: bool = False,
        admit: Callable[[SocketAddress], bool] | None = None,
        on_connect: Callable[[SocketAddress], None] | None = None,
        on_disconnect: Callable[[SocketAddress], None] | None = None,
        local_input: bool = True,
        half_close: bool = True,
        discard_clients: bool = False,
        end_on_local_eof: bool = False,
        quit_after_eof: float | None = None,
    ) -> None:
        self.listener = listener
        self.local = local
        self.max_conns = max_conns
        self.broker = broker or chat
        self.chat = chat
        self.admit = admit
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.local_input = local_input and not self.broker
        self.half_close = half_close
        self.discard_clients = discard_clients
        self.end_on_local_eof = end_on_local_eof
        self.quit_after_eof = quit_after_eof
        self.stats = HubStats()
        self._clients: dict[int, _Client] = {}
        self._output = bytearray()
        self._output_writing = False
        self._local_reading = False
        self._local_eof = False
        self._clients_paused = False
        self._full: set[int] = set()  # clients whose pending output is at the limit
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving: asyncio.Future[None] | None = None
        self._ending = False  # end_on_local_eof: ends once no client has bytes pending

    async def run(self) -> None:
        """Serve until cancelled; every client and the listener are closed at the end."""
        loop = self._loop = asyncio.get_running_loop()
        serving: asyncio.Future[None] = loop.create_future()
        self._serving = serving

        def fatal(error: OSError) -> None:
            if not serving.done():
                serving.set_exception(error)

        accepting = AcceptLoop(
            self.listener, self._accepted, fatal, logger=_logger, admit=self.admit
        )
        accepting.start()
        ended = False
        try:
            await serving  # until cancelled, an EOF option ends it, or accepting fails
            ended = True
        finally:
            accepting.close()
            self._read_local(False)
            if self._output_writing and self.local.write_fd >= 0:
                loop.remove_writer(self.local.write_fd)
            for client in list(self._clients.values()):
                self._drop(client, abort=not ended)

    def _end(self) -> None:
        """End :meth:`run` normally (an EOF option's doing)."""
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)

    # --- clients --------------------------------------------------------------------

    def _accepted(self, conn: socket.socket, sockaddr: object) -> None:
        address = SocketAddress.from_sockaddr(conn.family, sockaddr)
        if len(self._clients) >= self.max_conns:
            # Refused at once (ncat's -m): a reset now, not a wait in the queue.
            self.stats.refused += 1
            with contextlib.suppress(OSError):
                set_linger_zero(conn)
            conn.close()
            return
        conn.setblocking(False)
        self._users += 1
        client = _Client(conn, address, user=self._users)
        if self.chat:
            self._announce_arrival(client)
        self._clients[conn.fileno()] = client
        self.stats.connections += 1
        self.stats.active += 1
        if self.on_connect is not None:
            self.on_connect(address)
        if self._local_eof and self.local_input and self.half_close:
            self._shutdown(client)
        if not self._clients_paused:
            assert self._loop is not None  # noqa: S101
            self._loop.add_reader(conn.fileno(), self._on_client_readable, client)
        self._update_local_reading()

    def _on_client_readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client, abort=True)
            return
        if not data:
            self._drop(client, abort=False)
            return
        self.stats.bytes_in += len(data)
        if self.discard_clients:
            return
        if self.chat:
            data = self._tag(client, data)
        if self.broker:
            for other in list(self._clients.values()):
                if other is not client:
                    self._send(other, data)
            return
        self._output += data
        self._flush_output()

    def _send(self, client: _Client, data: bytes) -> None:
        client.pending += data
        self.stats.bytes_out += len(data)
        self._flush_client(client)

    # --- chat ---------------------------------------------------------------------------

    def _tag(self, client: _Client, data: bytes) -> bytes:
        """``<userN> `` before every line ``client`` starts, control bytes escaped."""
        tag = b"<user%d> " % client.user
        lines = chat_escape(data).split(b"\n")
        tagged = (b"\n" + tag).join(lines[:-1] + ([lines[-1]] if lines[-1] else []))
        if client.line_start:
            tagged = tag + tagged
        client.line_start = data.endswith(b"\n")
        return tagged + (b"\n" if client.line_start else b"")

    def _announce(self, line: str, *, to: list[_Client]) -> None:
        data = f"<announce> {line}\n".encode("ascii", "backslashreplace")
        for client in to:
            self._send(client, data)

    def _announce_arrival(self, client: _Client) -> None:
        name = f"{self._host(client)} is connected as <user{client.user}>."
        self._announce(name, to=[*self._clients.values(), client])
        others = ", ".join(
            f"{self._host(other)} as <user{other.user}>" for other in self._clients.values()
        )
        self._announce(f"already connected: {others or 'nobody'}.", to=[client])

    @staticmethod
    def _host(client: _Client) -> str:
        address = client.address
        return (address.path or "a UNIX peer") if address.is_unix else address.host

    def _flush_client(self, client: _Client) -> None:
        assert self._loop is not None  # noqa: S101
        while client.pending:
            try:
                sent = client.sock.send(client.pending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client, abort=True)
                return
            del client.pending[:sent]
        fd = client.sock.fileno()
        if client.pending and not client.writing:
            client.writing = True
            self._loop.add_writer(fd, self._flush_client, client)
        elif not client.pending:
            if client.writing:
                client.writing = False
                self._loop.remove_writer(fd)
            if client.eof_wanted:
                self._shutdown(client)
            if self._ending:
                self._end_when_flushed()
        if len(client.pending) >= BUFFER_LIMIT:
            self._full.add(fd)
        else:
            self._full.discard(fd)
        self._update_local_reading()

    def _shutdown(self, client: _Client) -> None:
        if client.pending:
            client.eof_wanted = True  # after the pending bytes
            return
        with contextlib.suppress(OSError):
            client.sock.shutdown(socket.SHUT_WR)

    def _drop(self, client: _Client, *, abort: bool) -> None:
        assert self._loop is not None  # noqa: S101
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is None:
            return
        self._full.discard(fd)
        self._loop.remove_reader(fd)
        if client.writing:
            self._loop.remove_writer(fd)
        if abort:
            with contextlib.suppress(OSError):
                set_linger_zero(client.sock)
        client.sock.close()
        self.stats.active -= 1
        if self.on_disconnect is not None:
            self.on_disconnect(client.address)
        if self.chat and self._clients:
            self._announce(f"<user{client.user}> is disconnected.", to=list(self._clients.values()))
        if self._ending:
            self._end_when_flushed()
        self._update_local_reading()

    # --- the local side ---------------------------------------------------------------

    def _read_local(self, on: bool) -> None:  # noqa: FBT001
        assert self._loop is not None  # noqa: S101
        fd = self.local.read_fd
        if on == self._local_reading or fd < 0 or self._local_eof:
            if fd < 0 and on and not self._local_eof:
                self._on_local_eof()
            return
        self._local_reading = on
        if self.local.read_pollable:
            if on:
                self._loop.add_reader(fd, self._on_local_readable)
            else:
                self._loop.remove_reader(fd)
        elif on:
            self._loop.call_soon(self._on_local_readable)

    def _on_local_readable(self) -> None:
        if not self._local_reading:
            return
        try:
            data = os.read(self.local.read_fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._read_local(False)
            self._on_local_eof()
            return
        for client in list(self._clients.values()):
            self._send(client, data)
        if not self.local.read_pollable and self._local_reading:
            assert self._loop is not None  # noqa: S101
            self._loop.call_soon(self._on_local_readable)

    def _on_local_eof(self) -> None:
        self._local_eof = True
        if self.half_close:
            for client in list(self._clients.values()):
                self._shutdown(client)
        if self.quit_after_eof is not None:
            assert self._loop is not None  # noqa: S101
            self._loop.call_later(self.quit_after_eof, self._end)
        if self.end_on_local_eof:
            self._ending = True
            self._end_when_flushed()

    def _end_when_flushed(self) -> None:
        if not any(client.pending for client in self._clients.values()):
            self._end()

    def _update_local_reading(self) -> None:
        """Pause the feeding side while any client has a full buffer; resume when none
        has. The feeding side is stdin (read only while a client is connected), or in
        broker mode every client."""
        if self.broker:
            self._pause_clients(bool(self._full))
            return
        if self.local_input and not self._local_eof:
            self._read_local(bool(self._clients) and not self._full)

    def _flush_output(self) -> None:
        assert self._loop is not None  # noqa: S101
        fd = self.local.write_fd
        while self._output and fd >= 0:
            try:
                written = os.write(fd, self._output)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno == errno.EPIPE:
                    self._output.clear()  # stdout closed: nothing more can be shown
                    break
                raise
            del self._output[:written]
        if fd < 0:
            self._output.clear()
        if self._output and not self._output_writing and self.local.write_pollable:
            self._output_writing = True
            self._loop.add_writer(fd, self._flush_output)
        elif not self._output and self._output_writing:
            self._output_writing = False
            self._loop.remove_writer(fd)
        self._pause_clients(len(self._output) >= BUFFER_LIMIT)

    def _pause_clients(self, pause: bool) -> None:  # noqa: FBT001
        if pause == self._clients_paused:
            return
        assert self._loop is not None  # noqa: S101
        self._clients_paused = pause
        for client in self._clients.values():
            fd = client.sock.fileno()
            if pause:
                self._loop.remove_reader(fd)
            else:
                self._loop.add_reader(fd, self._on_client_readable, client)
