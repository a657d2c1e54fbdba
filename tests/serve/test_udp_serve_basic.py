"""serve_udp and UDPServer over real loopback UDP sockets, with the built-in services."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.serve import services
from sockit.serve.services import chargen_pattern
from sockit.serve.udp import DEFAULT_BATCH, UDPServer, serve_udp

if TYPE_CHECKING:
    from sockit.addr import SocketAddress

TIMEOUT = 10.0


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def client_for(server: UDPServer, host: str = "127.0.0.1") -> sockit.UDPSocket:
    return sockit.open_udp(remote=(host, server.port))


def test_echo_over_udp_including_an_empty_datagram() -> None:
    with serve_udp(services.udp_echo, 0, "127.0.0.1") as server, client_for(server) as client:
        for payload in (b"hello", b"", b"x" * 60_000):
            client.send(payload)
            assert client.recv(timeout=TIMEOUT) == payload
    assert server.stats.received == 3
    assert server.stats.errors == 0


def test_a_burst_is_drained_and_every_datagram_answered() -> None:
    count = DEFAULT_BATCH * 3 + 7  # more than one batch per wake-up
    with serve_udp(services.udp_echo, 0, "127.0.0.1") as server, client_for(server) as client:
        for number in range(count):
            client.send(b"%d" % number)
        replies = {client.recv(timeout=TIMEOUT) for _ in range(count)}
    assert replies == {b"%d" % number for number in range(count)}
    assert server.stats.received == count


def test_chargen_over_udp_replies_one_datagram_of_0_to_512_pattern_bytes() -> None:
    pattern = chargen_pattern() * 2
    lengths = set()
    with serve_udp(services.udp_chargen, 0, "127.0.0.1") as server, client_for(server) as client:
        for _ in range(60):
            client.send(b"any")
            reply = client.recv(timeout=TIMEOUT)
            assert len(reply) <= 512
            assert reply in pattern
            if len(reply) >= 74:
                # Starts at a line boundary of the pattern.
                assert pattern.index(reply[:74]) % 74 == 0
            lengths.add(len(reply))
    assert len(lengths) > 10  # the length is random, not fixed


def test_daytime_over_udp_replies_one_line() -> None:
    with serve_udp(services.udp_daytime, 0, "127.0.0.1") as server, client_for(server) as client:
        client.send(b"")
        reply = client.recv(timeout=TIMEOUT)
    assert re.fullmatch(rb"\w+day, \w+ \d{1,2}, \d{4} \d\d:\d\d:\d\d-\S+\r\n", reply), reply


def test_discard_over_udp_answers_nothing() -> None:
    with serve_udp(services.udp_discard, 0, "127.0.0.1") as server, client_for(server) as client:
        client.send(b"into the void")
        # No event can show that nothing was sent; a short wait is the only witness.
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.2)
    assert server.stats.received == 1


def test_a_failing_handler_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(data: bytes, sender: SocketAddress, sock: sockit.UDPSocket) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        if data == b"refused":
            raise ConnectionRefusedError(111, "Connection refused")
        sock.sendto(data, sender)

    caplog.set_level(logging.DEBUG, logger="sockit.serve")
    with serve_udp(handler, 0, "127.0.0.1") as server, client_for(server) as client:
        for payload in (b"boom", b"refused", b"boom", b"still here"):
            client.send(payload)
        assert client.recv(timeout=TIMEOUT) == b"still here"
    assert server.stats.errors == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # One line per second at most: the second "boom" right after the first is counted,
    # not logged; the ICMP-style error is not an error at all.
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "handler bug" in str(errors[0].exc_info[1])


def test_wildcard_server_serves_ipv4_and_ipv6_and_reports_ipv4_peers_as_ipv4() -> None:
    senders: list[SocketAddress] = []

    def handler(data: bytes, sender: SocketAddress, sock: sockit.UDPSocket) -> None:
        senders.append(sender)
        sock.sendto(data, sender)

    with serve_udp(handler, 0) as server:
        with client_for(server, "127.0.0.1") as client:
            client.send(b"v4")
            assert client.recv(timeout=TIMEOUT) == b"v4"
            assert senders[-1] == client.local_address
        if has_ipv6_loopback():
            with client_for(server, "::1") as client6:
                client6.send(b"v6")
                assert client6.recv(timeout=TIMEOUT) == b"v6"
    families = [sender.family for sender in senders]
    assert families[0] == socket.AF_INET
    if has_ipv6_loopback():
        assert families[1] == socket.AF_INET6


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_a_host_with_several_addresses_gets_a_socket_each_on_one_port() -> None:
    server = serve_udp(services.udp_echo, 0, "localhost")
    with server:
        hosts = {address.host for address in server.addresses}
        ports = {address.port for address in server.addresses}
        assert len(ports) == 1
        for host in hosts:
            with client_for(server, host) as client:
                client.send(host.encode())
                assert client.recv(timeout=TIMEOUT) == host.encode()
    assert "127.0.0.1" in hosts


def test_deny_drops_datagrams_from_that_peer() -> None:
    with serve_udp(services.udp_echo, 0, "127.0.0.1", deny=["127.0.0.2"]) as server:
        with (
            sockit.open_udp("127.0.0.2", remote=("127.0.0.1", server.port)) as denied,
            client_for(server) as allowed,
        ):
            denied.send(b"first")
            allowed.send(b"second")
            # Both arrive on one socket in order: when the second is answered, the
            # first was already dropped.
            assert allowed.recv(timeout=TIMEOUT) == b"second"
            with pytest.raises(TimeoutError):
                denied.recv(timeout=0.1)
    assert server.stats.refused == 1
    assert server.stats.received == 1


def test_allow_list_admits_only_its_members() -> None:
    with serve_udp(services.udp_echo, 0, "127.0.0.1", allow=["127.0.0.2/32"]) as server:
        with sockit.open_udp("127.0.0.2", remote=("127.0.0.1", server.port)) as member:
            member.send(b"ok")
            assert member.recv(timeout=TIMEOUT) == b"ok"
    assert server.stats.refused == 0


def test_bad_access_entries_are_rejected_and_nothing_stays_open() -> None:
    with pytest.raises(sockit.AddressError):
        serve_udp(services.udp_echo, 0, "127.0.0.1", allow=["not-an-address"])


def test_lifecycle_shutdown_is_idempotent_and_closes_the_socket() -> None:
    server = serve_udp(services.udp_echo, 0, "127.0.0.1")
    assert server.port > 0
    assert server.addresses[0].host == "127.0.0.1"
    assert "127.0.0.1" in repr(server)
    server.start()
    with pytest.raises(RuntimeError):
        server.start()
    sock = server.sockets[0]
    server.shutdown()
    server.shutdown()
    assert sock.fileno() == -1
    with pytest.raises(RuntimeError):
        server.serve_forever()


def test_shutdown_before_serving_closes_everything() -> None:
    server = serve_udp(services.udp_echo, 0, "127.0.0.1")
    server.shutdown()
    assert server.sockets[0].fileno() == -1


def test_shutdown_interrupts_a_stuck_handler_after_the_drain_timeout() -> None:
    entered = threading.Event()
    outcome: list[BaseException] = []

    def stuck(data: bytes, sender: SocketAddress, sock: sockit.UDPSocket) -> None:
        entered.set()
        try:
            sock.recvfrom(timeout=TIMEOUT)  # nobody sends: blocks until the close
        except BaseException as error:
            outcome.append(error)
            raise

    server = serve_udp(stuck, 0, "127.0.0.1")
    server.start()
    with client_for(server) as client:
        client.send(b"x")
        assert entered.wait(TIMEOUT)
    started = time.monotonic()
    server.shutdown(drain_timeout=0.1)
    assert time.monotonic() - started < TIMEOUT / 2
    assert server.sockets[0].fileno() == -1
    assert len(outcome) == 1
    assert isinstance(outcome[0], sockit.ClosedResourceError)


def test_serving_an_existing_socket() -> None:
    sock = sockit.open_udp("127.0.0.1", 0)
    with serve_udp(services.udp_echo, sock=sock) as server, client_for(server) as client:
        assert server.sockets == [sock]
        client.send(b"adopted")
        assert client.recv(timeout=TIMEOUT) == b"adopted"
    assert sock.fileno() == -1


def test_port_in_use_raises_and_leaves_nothing_open() -> None:
    with sockit.open_udp("127.0.0.1", 0) as taken:
        with pytest.raises(OSError) as raised:
            serve_udp(services.udp_echo, taken.local_address.port, "127.0.0.1")
    assert raised.value.errno == 98  # EADDRINUSE


def test_argument_checks() -> None:
    sock = sockit.open_udp("127.0.0.1", 0)
    try:
        with pytest.raises(ValueError):
            UDPServer(services.udp_echo, [])
        with pytest.raises(ValueError):
            UDPServer(services.udp_echo, [sock], batch=0)
    finally:
        sock.close()
    with pytest.raises(sockit.AddressError):
        serve_udp(services.udp_echo, 70000)
