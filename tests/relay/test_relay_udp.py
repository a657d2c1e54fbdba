"""UDPSessionRelay over real loopback sockets: sessions per client, exact datagrams of
every size both ways, idle expiry on time, a bounded LRU table under 10,000 clients,
per-datagram errors (ICMP, a full queue, oversized replies) that never stop the relay,
unix-dgram targets, and cancellation that closes everything. Every relay test runs on
asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
from typing import TYPE_CHECKING, Any

import pytest

from sockit.errors import AddressError
from sockit.relay.grammar import parse_relay_endpoint
from sockit.relay.udp import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SESSIONS,
    UDPRelayStats,
    UDPSessionRelay,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from sockit.addr import SocketAddress

PATIENCE = 5.0
# How late an expiry may be: the sweep timer fires at the due time; the rest is the
# loop's timer granularity and a loaded 2-core machine.
EXPIRY_SLACK = 0.25


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


# --- helpers ----------------------------------------------------------------------------


class Records(logging.Handler):
    """Collects the relay's log records; lets a test await one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._new: asyncio.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self._new is not None:
            self._new.set()

    def events(self, name: str) -> list[logging.LogRecord]:
        return [record for record in self.records if getattr(record, "event", None) == name]

    def closes(self, reason: str | None = None) -> list[logging.LogRecord]:
        return [
            record
            for record in self.events("udp_session_close")
            if reason is None or getattr(record, "reason", None) == reason
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = PATIENCE) -> None:
        self._new = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._new.clear()
                    await self._new.wait()
        finally:
            self._new = None


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("sockit.test.relay_udp")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def relay_logger() -> logging.Logger:
    return logging.getLogger("sockit.test.relay_udp")


def udp_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def closed_udp_port() -> int:
    """A UDP port on 127.0.0.1 where nothing is bound (it was, a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def wait_readable(sock: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), on_readable)
    try:
        async with asyncio.timeout(timeout):
            await ready
    finally:
        loop.remove_reader(sock.fileno())


async def receive(sock: socket.socket, timeout: float = PATIENCE) -> tuple[bytes, Any]:
    """One datagram from a raw non-blocking socket, awaiting readiness (never blocking
    the loop the relay runs on)."""
    async with asyncio.timeout(timeout):
        for _ in range(1000):
            try:
                data, sender = sock.recvfrom(200_000)
            except BlockingIOError:
                await wait_readable(sock, timeout)
                continue
            return data, sender
    raise AssertionError("no datagram after 1000 wake-ups")


async def nothing_arrives(sock: socket.socket, within: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await receive(sock, within)
        return False
    return True


async def until(predicate: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """For counters that have no event to await: re-check every few milliseconds,
    bounded by ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def target_spec(port: int, options: str = "") -> Any:
    return parse_relay_endpoint(f"udp:127.0.0.1:{port}{options}")


def sockaddr_of(address: SocketAddress) -> tuple[str, int]:
    host = "127.0.0.1" if address.host in {"0.0.0.0", "::"} else address.host
    return (host, address.port)


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.asynccontextmanager
async def started(relay: UDPSessionRelay) -> AsyncIterator[tuple[str, int]]:
    addresses = await relay.start()
    try:
        yield sockaddr_of(addresses[0])
    finally:
        await relay.aclose()


# --- construction -----------------------------------------------------------------------


def test_defaults_come_from_the_listen_endpoint_then_the_module() -> None:
    target = target_spec(9)
    plain = UDPSessionRelay(parse_relay_endpoint("udp-listen:0"), target)
    assert plain.idle_timeout == DEFAULT_IDLE_TIMEOUT == 60.0
    assert plain.max_sessions == DEFAULT_MAX_SESSIONS == 1024
    listen = parse_relay_endpoint("udp-listen:0,idle-timeout=1500ms,max-conns=7")
    configured = UDPSessionRelay(listen, target)
    assert (configured.idle_timeout, configured.max_sessions) == (1.5, 7)
    explicit = UDPSessionRelay(listen, target, idle_timeout=3, max_sessions=2)
    assert (explicit.idle_timeout, explicit.max_sessions) == (3, 2)
    assert explicit.stats == UDPRelayStats()


@pytest.mark.parametrize(
    ("listen", "target", "kwargs", "error"),
    [
        ("tcp-listen:0", "udp:127.0.0.1:9", {}, ValueError),
        ("udp-listen:0", "tcp:127.0.0.1:9", {}, ValueError),
        ("udp-listen:0", "udp-listen:9", {}, ValueError),
        ("udp-listen:0", "udp:127.0.0.1:9", {"idle_timeout": 0}, ValueError),
        ("udp-listen:0", "udp:127.0.0.1:9", {"max_sessions": 0}, ValueError),
        ("udp-listen:0", "udp:127.0.0.1:9,bind=127.0.0.1:4000", {}, AddressError),
    ],
)
def test_invalid_configurations_are_refused(
    listen: str, target: str, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        UDPSessionRelay(parse_relay_endpoint(listen), parse_relay_endpoint(target), **kwargs)


def test_a_fixed_bind_port_serves_one_session_at_a_time(run: Callable[..., Any]) -> None:
    async def main() -> None:
        fixed = closed_udp_port()
        with udp_socket() as target, udp_socket() as a, udp_socket() as b:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1], f",bind=127.0.0.1:{fixed}"),
                max_sessions=1,
            )
            async with started(relay) as relay_address:
                for client in (a, b, a):
                    client.sendto(b"x", relay_address)
                    _, sender = await receive(target)
                    # The old session gives the port up before the new one binds it.
                    assert sender == ("127.0.0.1", fixed)
                assert relay.stats.sessions_evicted == 2
                assert relay.stats.errors == 0

    run(main)


# --- relaying ---------------------------------------------------------------------------


def test_every_size_is_relayed_byte_exact_both_ways_over_ipv4(run: Callable[..., Any]) -> None:
    sizes = [0, 1, 1472, 1473, 65507]

    async def main() -> None:
        with udp_socket() as target, udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
            )
            async with started(relay) as relay_address:
                upstream = None
                for size in sizes:
                    request, reply = os.urandom(size), os.urandom(size)
                    client.sendto(request, relay_address)
                    data, sender = await receive(target)
                    assert data == request, size
                    upstream = upstream or sender
                    assert sender == upstream  # one client, one session, one source port
                    target.sendto(reply, sender)
                    data, source = await receive(client)
                    assert data == reply, size
                    assert source == relay_address
                stats = relay.stats
                assert (stats.datagrams_in, stats.datagrams_out) == (5, 5)
                assert stats.bytes_in == stats.bytes_out == sum(sizes)
                assert (stats.sessions_opened, stats.active, stats.errors) == (1, 1, 0)

    run(main)


def test_each_client_gets_its_own_upstream_socket_and_only_its_replies(
    run: Callable[..., Any], records: Records
) -> None:
    async def main() -> None:
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(udp_socket())
            clients = [stack.enter_context(udp_socket()) for _ in range(3)]
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
                logger=relay_logger(),
            )
            async with started(relay) as relay_address:
                upstream_of: dict[int, Any] = {}
                for number, client in enumerate(clients):
                    client.sendto(b"from %d" % number, relay_address)
                    data, sender = await receive(target)
                    assert data == b"from %d" % number
                    upstream_of[number] = sender
                assert len(set(upstream_of.values())) == 3  # a distinct source per client
                # A second datagram from a known client reuses its session.
                clients[1].sendto(b"again", relay_address)
                data, sender = await receive(target)
                assert (data, sender) == (b"again", upstream_of[1])
                for number in reversed(range(3)):
                    target.sendto(b"to %d" % number, upstream_of[number])
                for number, client in enumerate(clients):
                    data, _ = await receive(client)
                    assert data == b"to %d" % number
                    assert await nothing_arrives(client, 0.05)
                assert relay.stats.sessions_opened == 3
                assert relay.stats.active == 3
                opened = records.events("udp_session_open")
                assert [record.peer for record in opened] == [  # type: ignore[attr-defined]
                    f"127.0.0.1:{client.getsockname()[1]}" for client in clients
                ]
            closed = records.closes("closed")
            assert len(closed) == 3
            counts = {record.peer: record.datagrams_in for record in closed}  # type: ignore[attr-defined]
            assert counts[f"127.0.0.1:{clients[1].getsockname()[1]}"] == 2
            assert relay.stats.active == 0

    run(main)


@needs_ipv6
def test_no_host_listens_on_ipv4_and_ipv6_on_one_real_port(
    run: Callable[..., Any], records: Records
) -> None:
    async def main() -> None:
        with (
            udp_socket() as target,
            udp_socket("127.0.0.1") as client4,
            udp_socket("::1") as client6,
        ):
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:0"),
                target_spec(target.getsockname()[1]),
                logger=relay_logger(),
            )
            addresses = await relay.start()
            try:
                assert len(addresses) == 1
                port = addresses[0].port
                assert port != 0
                for client, address in ((client4, ("127.0.0.1", port)), (client6, ("::1", port))):
                    client.sendto(b"ping", address)
                    data, sender = await receive(target)
                    assert data == b"ping"
                    target.sendto(b"pong", sender)
                    data, source = await receive(client)
                    assert data == b"pong"
                    assert source[:2] == address
                # The IPv4 client is reported as IPv4, not as ::ffff:127.0.0.1.
                peers = [record.peer for record in records.events("udp_session_open")]  # type: ignore[attr-defined]
                assert peers[0] == f"127.0.0.1:{client4.getsockname()[1]}"
                assert peers[1] == f"[::1]:{client6.getsockname()[1]}"
            finally:
                await relay.aclose()

    run(main)


def test_a_host_name_listens_on_each_of_its_addresses_on_one_port(
    run: Callable[..., Any],
) -> None:
    async def main() -> None:
        with udp_socket() as target:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:localhost:0"),
                target_spec(target.getsockname()[1]),
            )
            addresses = await relay.start()
            try:
                # localhost is 127.0.0.1 and, where /etc/hosts says so, ::1 as well.
                assert addresses
                assert {address.host for address in addresses} <= {"127.0.0.1", "::1"}
                assert len({address.port for address in addresses}) == 1
                assert addresses[0].port != 0
                for address in addresses:
                    with udp_socket(address.host) as client:
                        client.sendto(address.host.encode(), (address.host, address.port))
                        data, upstream = await receive(target)
                        assert data == address.host.encode()
                        target.sendto(b"back", upstream)
                        data, source = await receive(client)
                        assert (data, source[:2]) == (b"back", (address.host, address.port))
                assert relay.stats.sessions_opened == len(addresses)
            finally:
                await relay.aclose()

    run(main)


def test_a_source_address_can_be_bound(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with udp_socket() as target, udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1], ",bind=127.0.0.2"),
            )
            async with started(relay) as relay_address:
                client.sendto(b"x", relay_address)
                _, sender = await receive(target)
                assert sender[0] == "127.0.0.2"

    run(main)


# --- idle expiry ------------------------------------------------------------------------


def test_an_idle_session_expires_on_time(run: Callable[..., Any], records: Records) -> None:
    idle = 0.3

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with udp_socket() as target, udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
                idle_timeout=idle,
                logger=relay_logger(),
            )
            async with started(relay) as relay_address:
                client.sendto(b"one", relay_address)
                await receive(target)
                sent = loop.time()
                await records.wait_for(lambda: bool(records.closes()))
                waited = loop.time() - sent
                (record,) = records.closes()
                assert record.reason == "expired"  # type: ignore[attr-defined]
                # Idle since the one datagram, which opened the session.
                # (1 ms of slack: uvloop's clock counts milliseconds.)
                assert idle - 0.001 <= record.duration <= idle + EXPIRY_SLACK  # type: ignore[attr-defined]
                assert waited <= idle + EXPIRY_SLACK
                assert (relay.stats.sessions_expired, relay.stats.active) == (1, 0)
                # The client's next datagram opens a new session (a new source port).
                client.sendto(b"two", relay_address)
                data, _ = await receive(target)
                assert data == b"two"
                assert relay.stats.sessions_opened == 2

    run(main)


def test_replies_alone_keep_a_session_alive(run: Callable[..., Any], records: Records) -> None:
    idle = 0.3

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with udp_socket() as target, udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
                idle_timeout=idle,
                logger=relay_logger(),
            )
            async with started(relay) as relay_address:
                client.sendto(b"subscribe", relay_address)
                _, upstream = await receive(target)
                # Time passing is the point here: replies every 0.1 s for 0.6 s, twice
                # the idle timeout, and nothing from the client.
                for number in range(6):
                    await asyncio.sleep(0.1)
                    target.sendto(b"event %d" % number, upstream)
                    data, _ = await receive(client)
                    assert data == b"event %d" % number
                last_reply = loop.time()
                assert not records.closes()
                assert relay.stats.sessions_opened == 1
                await records.wait_for(lambda: bool(records.closes()))
                assert loop.time() - last_reply <= idle + EXPIRY_SLACK
                assert records.closes()[0].reason == "expired"  # type: ignore[attr-defined]

    run(main)


# --- the bounded table ------------------------------------------------------------------


def test_a_full_table_evicts_the_least_recently_active_session(
    run: Callable[..., Any], records: Records
) -> None:
    async def main() -> None:
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(udp_socket())
            a, b, c = (stack.enter_context(udp_socket()) for _ in range(3))
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0,max-conns=2"),
                target_spec(target.getsockname()[1]),
                logger=relay_logger(),
            )
            async with started(relay) as relay_address:
                upstream = {}
                for name, client in (("a", a), ("b", b)):
                    client.sendto(name.encode(), relay_address)
                    _, upstream[name] = await receive(target)
                # A reply to a makes b the least recently active.
                target.sendto(b"to a", upstream["a"])
                await receive(a)
                c.sendto(b"c", relay_address)
                await receive(target)
                (evicted,) = records.closes("evicted")
                assert evicted.peer == f"127.0.0.1:{b.getsockname()[1]}"  # type: ignore[attr-defined]
                assert relay.stats.sessions_evicted == 1
                assert relay.stats.active == 2
                a.sendto(b"a again", relay_address)
                _, sender = await receive(target)
                assert sender == upstream["a"]  # a kept its session
                b.sendto(b"b again", relay_address)
                _, sender = await receive(target)
                assert sender != upstream["b"]  # b got a new one
                assert relay.stats.sessions_opened == 4

    run(main)


def test_ten_thousand_clients_keep_the_table_and_fds_bounded_then_all_expire(
    run: Callable[..., Any], records: Records
) -> None:
    clients_total = 10_000
    batch = 50
    max_sessions = 100
    idle = 0.5

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with udp_socket() as target:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
                idle_timeout=idle,
                max_sessions=max_sessions,
                logger=relay_logger(),
            )
            async with started(relay) as relay_address:
                baseline = open_fd_count()
                most_fds = baseline
                ports_used: set[int] = set()
                candidate = 20_000
                started_at = loop.time()
                sent = 0
                while sent < clients_total:
                    clients: list[socket.socket] = []
                    try:
                        # Explicit ports, so every client address is new to the relay
                        # (port 0 hands recently freed ports out again).
                        while len(clients) < batch and candidate < 65_536:
                            try:
                                clients.append(udp_socket("127.0.0.1", candidate))
                            except OSError as error:
                                if error.errno not in {errno.EADDRINUSE, errno.EACCES}:
                                    raise
                            candidate += 1
                        assert len(clients) == batch, "ran out of free ports"
                        for client in clients:
                            ports_used.add(client.getsockname()[1])
                            client.sendto(b"hello", relay_address)
                        for _ in range(batch):
                            data, _ = await receive(target)
                            assert data == b"hello"
                        sent += batch
                        most_fds = max(most_fds, open_fd_count())
                        assert relay.stats.active <= max_sessions
                    finally:
                        for client in clients:
                            client.close()
                last_activity = loop.time()
                stats = relay.stats
                assert len(ports_used) == clients_total
                assert stats.sessions_opened == clients_total
                assert stats.sessions_evicted == clients_total - max_sessions
                assert stats.peak_active == stats.active == max_sessions
                assert stats.errors == 0
                # The relay's sockets (one per session, at most max_sessions) and one
                # batch of clients, nothing more.
                assert most_fds <= baseline + max_sessions + batch
                # Full-table notices: one per second at most.
                elapsed = last_activity - started_at
                assert len(records.events("udp_relay_evict")) <= elapsed + 1
                await records.wait_for(lambda: relay.stats.active == 0, timeout=idle + 2)
                assert loop.time() - last_activity <= idle + EXPIRY_SLACK
                assert stats.sessions_expired == max_sessions
                assert open_fd_count() == baseline

    run(main)


# --- per-datagram errors ----------------------------------------------------------------


def test_a_closed_target_port_is_not_fatal_and_traffic_resumes(run: Callable[..., Any]) -> None:
    async def main() -> None:
        port = closed_udp_port()
        with udp_socket() as client, udp_socket() as other:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(port),
            )
            async with started(relay) as relay_address:
                # Each datagram draws an ICMP port unreachable, reported on the
                # session's socket (ECONNREFUSED) and counted, one at a time.
                for number in range(1, 4):
                    client.sendto(b"lost %d" % number, relay_address)
                    await until(lambda number=number: relay.stats.errors == number)  # type: ignore[misc]
                assert relay.stats.datagrams_in == 3
                assert relay.stats.active == 1
                with udp_socket("127.0.0.1", port) as target:
                    client.sendto(b"through", relay_address)
                    data, upstream = await receive(target)
                    assert data == b"through"
                    target.sendto(b"reply", upstream)
                    data, _ = await receive(client)
                    assert data == b"reply"
                    other.sendto(b"new client", relay_address)
                    data, _ = await receive(target)
                    assert data == b"new client"
                assert relay.stats.sessions_opened == 2
                assert relay.stats.errors == 3

    run(main)


def unix_dgram_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    return sock


def test_a_unix_dgram_target_sees_one_address_per_client_and_replies(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    path = str(tmp_path / "target.sock")

    async def main() -> None:
        with (
            unix_dgram_socket(path) as target,
            udp_socket() as client,
            udp_socket() as other,
        ):
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                parse_relay_endpoint(f"unix-dgram:{path}"),
            )
            async with started(relay) as relay_address:
                client.sendto(b"", relay_address)
                data, sender = await receive(target)
                assert data == b""
                assert sender  # autobound: the target can answer
                other.sendto(b"other", relay_address)
                data, other_sender = await receive(target)
                assert data == b"other"
                assert other_sender != sender
                for reply in (b"", os.urandom(65507)):
                    target.sendto(reply, sender)
                    assert (await receive(client))[0] == reply
                # 65,508 bytes cannot go to an IPv4 client (EMSGSIZE); 100,000 would
                # not even fit the receive buffer: both dropped, and counted.
                for errors, size in enumerate((65508, 100_000), start=1):
                    target.sendto(b"x" * size, sender)
                    await until(lambda errors=errors: relay.stats.errors == errors)  # type: ignore[misc]
                target.sendto(b"ok", sender)
                assert (await receive(client))[0] == b"ok"
                assert await nothing_arrives(client, 0.05)
                assert relay.stats.datagrams_out == 3

    run(main)


def test_a_full_unix_dgram_target_drops_datagrams_and_recovers(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    path = str(tmp_path / "target.sock")
    count = 40

    async def main() -> None:
        with unix_dgram_socket(path) as target, udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                parse_relay_endpoint(f"unix-dgram:{path}"),
            )
            async with started(relay) as relay_address:
                # The target does not read: its queue (net.unix.max_dgram_qlen) fills
                # and the relay's sends fail with EAGAIN; those datagrams are dropped.
                for number in range(count):
                    client.sendto(b"%d" % number, relay_address)
                stats = relay.stats
                await until(lambda: stats.datagrams_in + stats.errors == count)
                assert stats.errors > 0
                assert stats.datagrams_in > 0
                queued: list[bytes] = []
                with contextlib.suppress(BlockingIOError):
                    while len(queued) < count:
                        queued.append(target.recv(100))
                assert queued == [b"%d" % number for number in range(stats.datagrams_in)]
                client.sendto(b"after", relay_address)
                data, _ = await receive(target)
                assert data == b"after"
                assert stats.active == 1

    run(main)


def test_a_restarted_unix_dgram_target_gets_a_new_session(
    run: Callable[..., Any], tmp_path: Path, records: Records
) -> None:
    path = str(tmp_path / "target.sock")

    async def main() -> None:
        with udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                parse_relay_endpoint(f"unix-dgram:{path}"),
                logger=relay_logger(),
            )
            with unix_dgram_socket(path) as target:
                addresses = await relay.start()
                relay_address = sockaddr_of(addresses[0])
                try:
                    client.sendto(b"first", relay_address)
                    assert (await receive(target))[0] == b"first"
                except BaseException:
                    await relay.aclose()
                    raise
            os.unlink(path)
            try:
                # The old target is gone: the session's socket is disconnected by the
                # kernel, so the relay drops that datagram and ends the session.
                client.sendto(b"lost", relay_address)
                await records.wait_for(lambda: bool(records.closes("error")))
                assert relay.stats.active == 0
                with unix_dgram_socket(path) as target:
                    client.sendto(b"second", relay_address)
                    assert (await receive(target))[0] == b"second"
                assert relay.stats.sessions_opened == 2
                assert relay.stats.errors == 1
            finally:
                await relay.aclose()

    run(main)


def test_a_missing_unix_dgram_target_drops_until_it_appears(
    run: Callable[..., Any], tmp_path: Path, records: Records
) -> None:
    path = str(tmp_path / "later.sock")

    async def main() -> None:
        with udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                parse_relay_endpoint(f"unix-dgram:{path}"),
                logger=relay_logger(),
            )
            async with started(relay) as relay_address:
                client.sendto(b"too early", relay_address)
                await until(lambda: relay.stats.errors == 1)
                assert (relay.stats.active, relay.stats.sessions_opened) == (0, 0)
                assert records.events("udp_relay_open")  # said why, once
                with unix_dgram_socket(path) as target:
                    client.sendto(b"now", relay_address)
                    assert (await receive(target))[0] == b"now"
                assert relay.stats.sessions_opened == 1

    run(main)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def limit_leaving_room_for(count: int) -> int:
    """An RLIMIT_NOFILE soft limit under which exactly ``count`` more fds can be opened:
    the kernel hands out the lowest free number and fails with EMFILE when no number
    below the limit is free (fds already above it stay valid)."""
    listed = [int(name) for name in os.listdir("/proc/self/fd")]
    # The listing's own descriptor was closed again: only what is still open counts.
    taken = {fd for fd in listed if is_open(fd)}
    free = [fd for fd in range(max(taken) + count + 1) if fd not in taken]
    return free[count - 1] + 1


def test_running_out_of_fds_evicts_the_least_recently_active_session(
    run: Callable[..., Any], records: Records
) -> None:
    async def main() -> None:
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(udp_socket())
            a, b, c = (stack.enter_context(udp_socket()) for _ in range(3))
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
                logger=relay_logger(),
            )
            async with started(relay) as relay_address:
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                # Room for two sessions' sockets, none for a third.
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit_leaving_room_for(2), hard))
                try:
                    upstream = {}
                    for name, client in (("a", a), ("b", b), ("c", c)):
                        client.sendto(name.encode(), relay_address)
                        data, upstream[name] = await receive(target)
                        assert data == name.encode()
                finally:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                (evicted,) = records.closes("evicted")
                assert evicted.peer == f"127.0.0.1:{a.getsockname()[1]}"  # type: ignore[attr-defined]
                assert "no file descriptors" in records.events("udp_relay_evict")[0].getMessage()
                stats = relay.stats
                assert (stats.sessions_opened, stats.sessions_evicted, stats.active) == (3, 1, 2)
                assert stats.errors == 0

    run(main)


# --- lifecycle --------------------------------------------------------------------------


def test_cancelling_serve_forever_closes_every_socket(
    run: Callable[..., Any], records: Records
) -> None:
    async def main() -> None:
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(udp_socket())
            clients = [stack.enter_context(udp_socket()) for _ in range(3)]
            before = open_fd_count()
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
                logger=relay_logger(),
            )
            relay_address = sockaddr_of((await relay.start())[0])
            task = asyncio.create_task(relay.serve_forever())
            for client in clients:
                client.sendto(b"hi", relay_address)
                await receive(target)
            assert open_fd_count() == before + 1 + 3
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert open_fd_count() == before
            assert len(records.closes("closed")) == 3
            assert relay.stats.active == 0
            await relay.aclose()  # idempotent
            with pytest.raises(RuntimeError):
                await relay.start()

    run(main)


def test_serve_forever_starts_the_relay_and_ends_with_aclose(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with udp_socket() as target, udp_socket() as client:
            relay = UDPSessionRelay(
                parse_relay_endpoint("udp-listen:127.0.0.1:0"),
                target_spec(target.getsockname()[1]),
            )
            task = asyncio.create_task(relay.serve_forever())
            await until(lambda: bool(relay.addresses))
            client.sendto(b"hi", sockaddr_of(relay.addresses[0]))
            assert (await receive(target))[0] == b"hi"
            await relay.aclose()
            async with asyncio.timeout(PATIENCE):
                await task
            assert relay.stats.active == 0

    run(main)


def test_start_twice_is_an_error_and_the_context_manager_closes(run: Callable[..., Any]) -> None:
    async def main() -> None:
        before = open_fd_count()
        relay = UDPSessionRelay(parse_relay_endpoint("udp-listen:127.0.0.1:0"), target_spec(9))
        async with relay:
            assert open_fd_count() == before + 1
            with pytest.raises(RuntimeError):
                await relay.start()
        assert open_fd_count() == before

    run(main)


def test_a_bind_failure_leaves_nothing_open(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with udp_socket() as taken:
            port = taken.getsockname()[1]
            before = open_fd_count()
            relay = UDPSessionRelay(
                parse_relay_endpoint(f"udp-listen:127.0.0.1:{port}"), target_spec(9)
            )
            with pytest.raises(OSError, match="bind") as caught:
                await relay.start()
            assert caught.value.errno == errno.EADDRINUSE
            assert open_fd_count() == before
            await relay.aclose()

    run(main)
