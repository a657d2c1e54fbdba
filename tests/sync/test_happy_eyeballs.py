"""Happy Eyeballs (RFC 8305): exact attempt start times on a virtual clock, and one real
black-hole test over loopback."""

from __future__ import annotations

import errno
import select
import socket
import time

import pytest

import sockit
from sockit.testing.fakes import Fail, FakeResolver, FakeSocketFactory, Hang, Succeed

V6A, V6B = "2001:db8::1", "2001:db8::2"
V4A, V4B = "192.0.2.1", "192.0.2.2"


def _connect(
    factory: FakeSocketFactory, addresses: list[str], **kwargs: object
) -> sockit.SocketStream:
    resolver = FakeResolver({"example.test": addresses})
    return sockit.connect(
        "example.test",
        80,
        resolver=resolver,
        socket_factory=factory,
        **kwargs,  # type: ignore[arg-type]
    )


def _starts(factory: FakeSocketFactory) -> list[tuple[str, float]]:
    return [(record.address, round(record.started, 6)) for record in factory.attempts]


def test_single_address_connects_immediately() -> None:
    factory = FakeSocketFactory(script={f"{V4A}:80": Succeed(after=0.1)})
    with _connect(factory, [V4A]) as stream:
        assert str(stream.remote_address) == f"{V4A}:80"
    assert _starts(factory) == [(f"{V4A}:80", 0.0)]
    assert factory.open_sockets == []


def test_black_hole_first_address_next_starts_after_delay() -> None:
    factory = FakeSocketFactory(script={f"[{V6A}]:80": Hang(), f"{V4A}:80": Succeed(after=0.05)})
    with _connect(factory, [V6A, V4A]) as stream:
        assert str(stream.remote_address) == f"{V4A}:80"
        assert factory.now == pytest.approx(0.30)
        # The loser (still hanging) was closed; only the winner is open.
        assert factory.open_sockets == [stream.socket]
    assert _starts(factory) == [(f"[{V6A}]:80", 0.0), (f"{V4A}:80", 0.25)]


def test_failure_starts_next_attempt_at_once() -> None:
    factory = FakeSocketFactory(
        script={f"[{V6A}]:80": Fail(after=0.1), f"{V4A}:80": Succeed(after=0.02)}
    )
    with _connect(factory, [V6A, V4A]):
        pass
    assert _starts(factory) == [(f"[{V6A}]:80", 0.0), (f"{V4A}:80", 0.1)]


def test_immediate_connect_error_starts_next_attempt_at_once() -> None:
    factory = FakeSocketFactory(
        script={
            f"[{V6A}]:80": Fail(after=None, errno=errno.ENETUNREACH),
            f"{V4A}:80": Succeed(after=0.01),
        }
    )
    with _connect(factory, [V6A, V4A]):
        pass
    assert _starts(factory) == [(f"[{V6A}]:80", 0.0), (f"{V4A}:80", 0.0)]


def test_families_interleaved_in_resolver_order() -> None:
    factory = FakeSocketFactory(default=Hang(), script={f"{V4B}:80": Succeed(after=0.0)})
    with _connect(factory, [V6A, V6B, V4A, V4B]) as stream:
        assert factory.open_sockets == [stream.socket]
    assert _starts(factory) == [
        (f"[{V6A}]:80", 0.0),
        (f"{V4A}:80", 0.25),
        (f"[{V6B}]:80", 0.5),
        (f"{V4B}:80", 0.75),
    ]


def test_ipv4_first_answer_starts_with_ipv4() -> None:
    factory = FakeSocketFactory(default=Hang(), script={f"[{V6A}]:80": Succeed(after=0.1)})
    with _connect(factory, [V4A, V4B, V6A]) as stream:
        assert stream.remote_address.family == socket.AF_INET6
    assert _starts(factory) == [(f"{V4A}:80", 0.0), (f"[{V6A}]:80", 0.25)]


def test_first_to_complete_wins_and_exactly_one_winner() -> None:
    # The first attempt completes at 0.4, the second (started 0.25) at 0.3: the second
    # wins, and the first is closed even though it would have succeeded.
    factory = FakeSocketFactory(
        script={f"[{V6A}]:80": Succeed(after=0.4), f"{V4A}:80": Succeed(after=0.05)}
    )
    with _connect(factory, [V6A, V4A]) as stream:
        assert str(stream.remote_address) == f"{V4A}:80"
        assert factory.open_sockets == [stream.socket]


def test_custom_delay_and_sequential_mode() -> None:
    factory = FakeSocketFactory(default=Fail(after=1.0), script={f"{V4B}:80": Succeed(0.5)})
    with _connect(factory, [V4A, V4B], happy_eyeballs_delay=0.1):
        pass
    assert _starts(factory) == [(f"{V4A}:80", 0.0), (f"{V4B}:80", 0.1)]

    factory = FakeSocketFactory(default=Fail(after=1.0), script={f"{V4B}:80": Succeed(0.5)})
    with _connect(factory, [V4A, V4B], happy_eyeballs_delay=None):
        pass
    assert _starts(factory) == [(f"{V4A}:80", 0.0), (f"{V4B}:80", 1.0)]


def test_all_refused_is_connection_refused_naming_every_attempt() -> None:
    factory = FakeSocketFactory(default=Fail(after=0.01))
    with pytest.raises(ConnectionRefusedError) as caught:
        _connect(factory, [V6A, V4A])
    error = caught.value
    assert isinstance(error, sockit.ConnectError)
    assert error.errno == errno.ECONNREFUSED
    assert error.host == "example.test"
    assert error.port == 80
    assert [attempt.address for attempt in error.attempts] == [f"[{V6A}]:80", f"{V4A}:80"]
    assert [round(attempt.elapsed, 6) for attempt in error.attempts] == [0.01, 0.02]
    assert f"[{V6A}]:80" in str(error)
    assert f"{V4A}:80" in str(error)
    assert "example.test:80" in str(error)
    assert factory.open_sockets == []


def test_refused_on_one_family_unreachable_on_other_is_still_refused() -> None:
    factory = FakeSocketFactory(
        script={
            f"[{V6A}]:80": Fail(after=None, errno=errno.ENETUNREACH),
            f"{V4A}:80": Fail(after=0.01),
        }
    )
    with pytest.raises(ConnectionRefusedError):
        _connect(factory, [V6A, V4A])


def test_other_errors_keep_their_errno() -> None:
    factory = FakeSocketFactory(default=Fail(after=0.01, errno=errno.EHOSTUNREACH))
    with pytest.raises(sockit.ConnectError) as caught:
        _connect(factory, [V4A])
    assert not isinstance(caught.value, ConnectionRefusedError)
    assert caught.value.errno == errno.EHOSTUNREACH
    assert isinstance(caught.value.__cause__, OSError)


def test_timeout_is_timeout_error_and_closes_everything() -> None:
    factory = FakeSocketFactory(default=Hang())
    with pytest.raises(TimeoutError) as caught:
        _connect(factory, [V6A, V4A, V6B], timeout=0.6)
    assert isinstance(caught.value, sockit.ConnectTimeoutError)
    assert factory.now == pytest.approx(0.6)
    assert _starts(factory) == [(f"[{V6A}]:80", 0.0), (f"{V4A}:80", 0.25), (f"[{V6B}]:80", 0.5)]
    assert factory.open_sockets == []


def test_local_address_binds_and_restricts_family() -> None:
    factory = FakeSocketFactory(default=Succeed(after=0.0))
    with _connect(factory, [V6A, V4A], local_address="192.0.2.200"):
        pass
    assert [(r.address, r.local) for r in factory.attempts] == [(f"{V4A}:80", "192.0.2.200:0")]


def test_family_restriction() -> None:
    factory = FakeSocketFactory(default=Succeed(after=0.0))
    with _connect(factory, [V6A, V4A], family=socket.AF_INET6):
        pass
    assert _starts(factory) == [(f"[{V6A}]:80", 0.0)]


def test_bad_port_and_host_rejected_before_lookup() -> None:
    resolver = FakeResolver({"example.test": [V4A]})
    factory = FakeSocketFactory()
    for port in (65536, -1, "99999"):
        with pytest.raises(sockit.AddressError):
            sockit.connect("example.test", port, resolver=resolver, socket_factory=factory)
    with pytest.raises(sockit.AddressError):
        sockit.connect("010.1.1.1", 80, resolver=resolver, socket_factory=factory)
    assert resolver.calls == []
    assert factory.attempts == []


def test_unknown_name_is_resolution_error() -> None:
    factory = FakeSocketFactory()
    with pytest.raises(sockit.ResolutionError) as caught:
        sockit.connect("nope.test", 80, resolver=FakeResolver(), socket_factory=factory)
    assert "nope.test" in str(caught.value)
    assert factory.attempts == []


# --- the real thing: a black hole on 127.0.0.2 ------------------------------------------


def _fill_accept_queue(listener: socket.socket, clients: list[socket.socket]) -> None:
    """Connect until a connect no longer completes: the accept queue is full and the
    kernel drops further SYNs (tcp_abort_on_overflow=0, the default)."""
    address = listener.getsockname()
    for _ in range(64):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        clients.append(client)
        client.setblocking(False)
        client.connect_ex(address)
        poller = select.poll()
        poller.register(client, select.POLLOUT)
        if not poller.poll(200):
            return
    pytest.fail("could not fill the accept queue")


def test_real_black_hole_first_address_connects_within_half_a_second() -> None:
    black_hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    try:
        black_hole.bind(("127.0.0.2", 0))
        black_hole.listen(0)
        _fill_accept_queue(black_hole, clients)
        port = black_hole.getsockname()[1]
        with sockit.listen(port, "127.0.0.1") as good:
            # The same port on 127.0.0.1 answers; 127.0.0.2 first drops our SYN.
            resolver = FakeResolver({"dual.test": ["127.0.0.2", "127.0.0.1"]})
            started = time.monotonic()
            with sockit.connect("dual.test", port, resolver=resolver) as stream:
                elapsed = time.monotonic() - started
                with good.accept(timeout=5) as accepted:
                    stream.sendall(b"ping")
                    assert accepted.recv_exactly(4, timeout=5) == b"ping"
                assert str(stream.remote_address) == f"127.0.0.1:{port}"
            assert elapsed < 0.5, f"connect took {elapsed:.3f} s"
            assert elapsed >= 0.2, "the second attempt must wait for the delay"
    finally:
        for client in clients:
            client.close()
        black_hole.close()
