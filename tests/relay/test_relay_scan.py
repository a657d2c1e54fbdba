"""The -z port scanner (sockit.relay.scan): the port-list grammar, and scans of real
loopback ports on asyncio and uvloop.

Closed ports are *reserved*: a socket bound to the port without listening, so the
kernel answers a SYN with a reset (refused) and nobody else can take the port during the
test. Filtered ports are *black holes*: a listener whose accept queue is full, so the
kernel drops the SYN (tcp_abort_on_overflow=0, the default) and the connect hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import random
import resource
import select
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sockit.errors import AddressError, ResolutionError
from sockit.relay.scan import (
    MAX_PORT_SPEC_LENGTH,
    PortResult,
    _is_self_connect,
    parse_port_spec,
    scan_ports,
)
from sockit.testing.fakes import FakeResolver

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    # The `run` fixture of tests/conftest.py: run(coroutine_function, *args) on a new
    # loop of the test's backend.
    Runner = Callable[..., Any]

WINDOW = 1000
LISTENERS_IN_WINDOW = 20


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")


# --- the port-list grammar --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80", [80]),
        ("1", [1]),
        ("65535", [65535]),
        ("20-25", [20, 21, 22, 23, 24, 25]),
        ("7-7", [7]),
        ("20-25,80,443", [20, 21, 22, 23, 24, 25, 80, 443]),
        (" 443 , 80 ,\t80\n", [80, 443]),
        (" 20 - 22 ", [20, 21, 22]),
        ("443,80,22", [22, 80, 443]),
        ("1-10,5-15,3", list(range(1, 16))),
        ("10-12,13-14", [10, 11, 12, 13, 14]),
        ("0080", [80]),
    ],
)
def test_port_lists_parse_sorted_and_deduplicated(text: str, expected: list[int]) -> None:
    assert parse_port_spec(text) == expected


def _services_known(*names: str) -> bool:
    try:
        for name in names:
            socket.getservbyname(name, "tcp")
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not _services_known("ftp", "ssh", "http", "https", "http-alt"),
    reason="this system's services(5) table lacks the names used here",
)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http", [80]),
        ("http,https,ssh", [22, 80, 443]),
        (" https , http,80", [80, 443]),
        ("ftp-ssh", [21, 22]),
        ("ssh-25", [22, 23, 24, 25]),
        ("ftp - ssh", [21, 22]),
        # A name with a hyphen that the system knows is one port, not a range.
        ("http-alt", [8080]),
        ("http-alt,http", [80, 8080]),
    ],
)
def test_service_names_and_ranges_of_them(text: str, expected: list[int]) -> None:
    assert parse_port_spec(text) == expected


def test_every_port_is_one_range_and_repeats_cost_nothing() -> None:
    assert parse_port_spec("1-65535") == list(range(1, 65536))
    assert parse_port_spec(",".join(["1-65535"] * 1000)) == list(range(1, 65536))
    every_port_written_out = ", ".join(str(port) for port in range(65535, 0, -1))
    assert len(every_port_written_out) < MAX_PORT_SPEC_LENGTH
    assert parse_port_spec(every_port_written_out) == list(range(1, 65536))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("0", "'0'"),
        ("65536", "'65536'"),
        ("99999", "'99999'"),
        ("-1", "'-1'"),
        ("25-20", "'25-20'"),
        ("", "''"),
        ("   ", "no port given"),
        ("1-2-3", "'1-2-3'"),
        ("x-y", "'x'"),
        ("1-x", "'x'"),
        ("0-10", "'0'"),
        ("1-65536", "'65536'"),
        ("5-", "'5-'"),
        ("-5", "'-5'"),
        ("80,", "item 2 is empty"),
        (",80", "item 1 is empty"),
        ("80,,81", "item 2 is empty"),
        ("80,nosuchservice", "'nosuchservice'"),
        ("+80", "'+80'"),
        ("8 0", "'8 0'"),
        ("80;81", "'80;81'"),
    ],
)
def test_bad_port_lists_are_refused_naming_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_port_spec(text)
    assert named in str(caught.value)


def test_port_lists_are_bounded() -> None:
    with pytest.raises(AddressError, match="at most"):
        parse_port_spec("1," * (MAX_PORT_SPEC_LENGTH // 2) + "1")
    with pytest.raises(AddressError, match="items, at most 65535"):
        parse_port_spec("1," * 65535 + "1")
    # A huge bad item is quoted, not copied whole into the message.
    with pytest.raises(AddressError) as caught:
        parse_port_spec("9" * 100_000)
    assert len(str(caught.value)) < 200


def test_a_port_list_must_be_text() -> None:
    with pytest.raises(TypeError):
        parse_port_spec(80)  # type: ignore[arg-type]


# --- loopback fixtures ------------------------------------------------------------------


def _reserve(host: str, port: int) -> socket.socket | None:
    """A socket bound to ``host:port`` and not listening (connects are refused), or
    ``None`` if the port is not free. No SO_REUSEADDR: nobody else can bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise
    return sock


@contextlib.contextmanager
def reserved_ports(count: int, host: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    """``count`` reserved (refusing) ports on ``host`` that the kernel picked."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = _reserve(host, 0)
            assert sock is not None
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _ephemeral_range() -> tuple[int, int]:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
    except OSError:
        return 32768, 60999  # Linux's default
    low, high = text.split()
    return int(low), int(high)


@contextlib.contextmanager
def enough_fds(needed: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to ``needed`` for the block, if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def port_window() -> Iterator[tuple[int, dict[int, socket.socket]]]:
    """A window of WINDOW consecutive ports on 127.0.0.1 and the ports of it reserved
    for this test (at least 90 %; ports something else holds are left out).

    The window lies below the ephemeral range, so no connect of the scan can get one of
    its ports as source port (which, for a free port, would connect to itself).
    """
    low, _high = _ephemeral_range()
    top = low - WINDOW if low - WINDOW > 10_000 else 65535 - WINDOW
    bases = [random.randrange(10_000, top) for _ in range(10)]
    for base in bases:
        reserved: dict[int, socket.socket] = {}
        try:
            for port in range(base, base + WINDOW):
                sock = _reserve("127.0.0.1", port)
                if sock is not None:
                    reserved[port] = sock
            if len(reserved) >= WINDOW * 9 // 10:
                yield base, reserved
                return
        finally:
            for sock in reserved.values():
                sock.close()
    pytest.skip("no window of 1,000 loopback ports with 90 % of them free")


def _fill_accept_queues(listeners: list[socket.socket], fillers: list[socket.socket]) -> None:
    """Fill the accept queue of every listener (each made with ``listen(0)``): connect
    to each until a probe connect is left hanging for 200 ms; the clients stay open in
    ``fillers``. All listeners are probed at once, so this takes about 0.2 s per round
    (two rounds on Linux: a backlog of 0 holds one connection)."""
    pending = list(listeners)
    for _ in range(8):
        poller = select.poll()
        by_fd: dict[int, socket.socket] = {}
        for listener in pending:
            client = socket.socket(listener.family, socket.SOCK_STREAM)
            fillers.append(client)
            client.setblocking(False)
            client.connect_ex(listener.getsockname())
            by_fd[client.fileno()] = listener
            poller.register(client, select.POLLOUT)
        completed: set[int] = set()
        deadline = time.monotonic() + 0.2
        while len(completed) < len(by_fd):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _event in poller.poll(math.ceil(remaining * 1000)):
                completed.add(fd)
                poller.unregister(fd)
        # A probe that connected found room: that queue is not full yet.
        pending = [by_fd[fd] for fd in completed]
        if not pending:
            return
    pytest.fail("could not fill the accept queues")


@contextlib.contextmanager
def black_holes(count: int, host: str = "127.0.0.1") -> Iterator[list[int]]:
    """``count`` ports on ``host`` whose listeners drop every further SYN."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listeners: list[socket.socket] = []
    fillers: list[socket.socket] = []
    try:
        for _ in range(count):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.bind((host, 0))
            listener.listen(0)
        _fill_accept_queues(listeners, fillers)
        yield [listener.getsockname()[1] for listener in listeners]
    finally:
        for sock in fillers + listeners:
            sock.close()


def _socket_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.add(int(name))
    return fds


# --- scans ------------------------------------------------------------------------------


def test_a_window_of_1000_ports_is_reported_exactly(run: Runner) -> None:
    with enough_fds(WINDOW + 512), port_window() as (base, reserved):
        chosen = random.sample(sorted(reserved), LISTENERS_IN_WINDOW)
        for port in chosen:
            reserved[port].listen(8)
        finished: list[int] = []

        async def main() -> list[PortResult]:
            return await scan_ports(
                "127.0.0.1",
                range(base, base + WINDOW),
                timeout=5,
                on_result=lambda result: finished.append(result.port),
            )

        started = time.monotonic()
        results = run(main)
        elapsed = time.monotonic() - started

        assert [result.port for result in results] == list(range(base, base + WINDOW))
        assert sorted(finished) == list(range(base, base + WINDOW))
        open_ports = sorted(chosen)
        for result in results:
            if result.port in chosen:
                assert result.open, result
                assert str(result.address) == f"127.0.0.1:{result.port}"
                assert result.error is None
            elif result.port in reserved:
                assert result == PortResult(result.port, False, None, "refused")
        assert [r.port for r in results if r.open and r.port in reserved] == open_ports
        assert elapsed < 10

        # Each listener got exactly one connection, with nothing sent, closed by a reset
        # (SO_LINGER 0, so no TIME_WAIT on the scanner's side).
        for port in chosen:
            listener = reserved[port]
            listener.settimeout(5)
            connection, _peer = listener.accept()
            with connection, pytest.raises(ConnectionResetError):
                connection.recv(1)
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()


def test_results_come_in_port_order_once_per_port(run: Runner) -> None:
    with reserved_ports(3) as sockets:
        sockets[1].listen(1)
        ports = [sock.getsockname()[1] for sock in sockets]
        seen: list[PortResult] = []

        async def main() -> list[PortResult]:
            return await scan_ports(
                "127.0.0.1", [*reversed(ports), ports[0], ports[2]], on_result=seen.append
            )

        results = run(main)
    assert [result.port for result in results] == sorted(ports)
    assert {result.port: result.open for result in results} == {
        ports[0]: False,
        ports[1]: True,
        ports[2]: False,
    }
    assert sorted(seen, key=lambda result: result.port) == results


def test_no_ports_is_an_empty_scan(run: Runner) -> None:
    async def main() -> list[PortResult]:
        return await scan_ports("127.0.0.1", [])

    assert run(main) == []


def test_a_socket_connected_to_itself_is_recognised() -> None:
    # What a scan of a free local port can meet when the kernel picks that very port as
    # the connect's source port (TCP simultaneous open with itself): nobody listens.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.connect(sock.getsockname())
        assert _is_self_connect(sock)
    with reserved_ports(1) as (listener,):
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            assert not _is_self_connect(client)


@needs_ipv6
def test_ipv6_literal(run: Runner) -> None:
    with reserved_ports(2, "::1") as sockets:
        sockets[0].listen(1)
        open_port, closed_port = (sock.getsockname()[1] for sock in sockets)

        async def main() -> list[PortResult]:
            return await scan_ports("::1", [open_port, closed_port])

        results = {result.port: result for result in run(main)}
    assert str(results[open_port].address) == f"[::1]:{open_port}"
    assert results[closed_port] == PortResult(closed_port, False, None, "refused")


def _reserve_on_both(free_family_ports: int = 20) -> tuple[socket.socket, socket.socket]:
    """One port reserved on both 127.0.0.1 and ::1."""
    for _ in range(free_family_ports):
        v4 = _reserve("127.0.0.1", 0)
        assert v4 is not None
        v6 = _reserve("::1", v4.getsockname()[1])
        if v6 is not None:
            return v4, v6
        v4.close()
    pytest.skip("no port free on both 127.0.0.1 and ::1")


@needs_ipv6
def test_each_port_falls_back_to_the_other_family_and_the_name_is_resolved_once(
    run: Runner,
) -> None:
    resolver = FakeResolver({"dual.test": ["::1", "127.0.0.1"]})
    with contextlib.ExitStack() as stack:
        pairs = [_reserve_on_both() for _ in range(3)]
        for pair in pairs:
            for sock in pair:
                stack.callback(sock.close)
        (v4_only, _), (_, v6_only), _ = pairs
        v4_only.listen(1)  # ::1 refuses, 127.0.0.1 accepts
        v6_only.listen(1)  # ::1 accepts
        ipv4_port, ipv6_port, closed_port = (v4.getsockname()[1] for v4, _ in pairs)

        async def main(family: int | None) -> list[PortResult]:
            return await scan_ports(
                "dual.test",
                [ipv4_port, ipv6_port, closed_port],
                family=family,
                resolver=resolver,
            )

        results = {result.port: result for result in run(main, None)}
        assert len(resolver.calls) == 1
        assert str(results[ipv4_port].address) == f"127.0.0.1:{ipv4_port}"
        assert str(results[ipv6_port].address) == f"[::1]:{ipv6_port}"
        # Refused on both addresses: one reason.
        assert results[closed_port] == PortResult(closed_port, False, None, "refused")

        only_ipv4 = {result.port: result for result in run(main, socket.AF_INET)}
        assert only_ipv4[ipv4_port].open
        assert only_ipv4[ipv6_port] == PortResult(ipv6_port, False, None, "refused")


@needs_ipv6
def test_different_reasons_on_each_address_are_all_named(run: Runner) -> None:
    with black_holes(1, "::1") as (port,):
        refusing = _reserve("127.0.0.1", port)
        if refusing is None:
            pytest.skip(f"127.0.0.1:{port} is taken")
        with refusing:
            resolver = FakeResolver({"dual.test": ["::1", "127.0.0.1"]})

            async def main() -> list[PortResult]:
                return await scan_ports("dual.test", [port], timeout=0.2, resolver=resolver)

            (result,) = run(main)
    assert result == PortResult(
        port, False, None, f"[::1]:{port}: timed out; 127.0.0.1:{port}: refused"
    )


def test_a_name_that_does_not_resolve_raises_before_any_connect(run: Runner) -> None:
    resolver = FakeResolver({})
    seen: list[PortResult] = []
    before = _socket_fds()

    async def main() -> list[PortResult]:
        return await scan_ports("nowhere.test", [1, 2, 3], resolver=resolver, on_result=seen.append)

    with pytest.raises(ResolutionError, match=r"nowhere\.test"):
        run(main)
    assert resolver.calls == [("nowhere.test", 0, 0)]
    assert seen == []
    assert _socket_fds() <= before


def test_filtered_ports_time_out_and_concurrency_is_bounded(run: Runner) -> None:
    # 30 black holes, 10 at a time, 0.3 s each: three waves of timeouts. Unbounded, all
    # 30 would time out together after 0.3 s.
    concurrency, timeout, count = 10, 0.3, 30
    with black_holes(count) as ports:
        finished: list[float] = []
        most_open = 0

        async def sample(done: asyncio.Event, baseline: set[int]) -> None:
            nonlocal most_open
            for _ in range(1000):  # bounded: the scan takes about 1 s
                most_open = max(most_open, len(_socket_fds() - baseline))
                if done.is_set():
                    return
                await asyncio.sleep(0.005)

        async def main() -> list[PortResult]:
            start = asyncio.get_running_loop().time()
            done = asyncio.Event()
            # Taken on the loop: the loop's own sockets (asyncio's self-pipe) are not
            # the scanner's.
            sampler = asyncio.create_task(sample(done, _socket_fds()))
            try:
                return await scan_ports(
                    "127.0.0.1",
                    ports,
                    timeout=timeout,
                    concurrency=concurrency,
                    on_result=lambda _: finished.append(asyncio.get_running_loop().time() - start),
                )
            finally:
                done.set()
                await sampler

        results = run(main)
    assert all(result == PortResult(result.port, False, None, "timed out") for result in results)
    assert most_open == concurrency
    finished.sort()
    for index, moment in enumerate(finished):
        wave = index // concurrency + 1
        assert moment >= wave * timeout - 0.01, (index, finished)
    assert finished[-1] < count / concurrency * timeout + 1.5


def test_the_rate_limit_spaces_connect_starts(run: Runner) -> None:
    rate, count = 200.0, 100
    with reserved_ports(count) as sockets:
        ports = [sock.getsockname()[1] for sock in sockets]
        finished: list[float] = []

        async def main() -> list[PortResult]:
            loop = asyncio.get_running_loop()
            return await scan_ports(
                "127.0.0.1",
                ports,
                rate=rate,
                on_result=lambda _: finished.append(loop.time()),
            )

        wall, cpu = time.monotonic(), time.process_time()
        results = run(main)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert all(result.error == "refused" for result in results)
    # 100 starts at 200/s with a 2-token burst: 98 intervals of 5 ms.
    assert wall >= 0.45
    assert wall < 5
    # The scan waits on a timer between starts, it does not spin.
    assert cpu < wall * 0.6, (cpu, wall)
    # At no point faster than the rate, allowing the burst and some scheduling jitter.
    finished.sort()
    span = 0.25
    for index, moment in enumerate(finished):
        within = sum(1 for other in finished[index:] if other - moment <= span)
        assert within <= span * rate + 2 + 8, (index, within)


def test_without_a_rate_the_window_is_scanned_at_once(run: Runner) -> None:
    with reserved_ports(200) as sockets:
        ports = [sock.getsockname()[1] for sock in sockets]

        async def main() -> list[PortResult]:
            return await scan_ports("127.0.0.1", ports, concurrency=50)

        started = time.monotonic()
        results = run(main)
        elapsed = time.monotonic() - started
    assert [result.port for result in results] == sorted(ports)
    assert not any(result.open for result in results)
    assert elapsed < 2


def test_a_cancelled_scan_closes_every_socket(run: Runner) -> None:
    with black_holes(10) as holes, reserved_ports(1) as (refusing,):
        ports = [*holes, refusing.getsockname()[1]]
        baseline = _socket_fds()
        in_flight_when_cancelled: list[int] = []

        async def main() -> None:
            first = asyncio.Event()
            on_the_loop = _socket_fds()

            def on_result(result: PortResult) -> None:
                # The refused port finished; every black hole is still connecting.
                assert result.error == "refused"
                in_flight_when_cancelled.append(len(_socket_fds() - on_the_loop))
                first.set()

            scan = asyncio.create_task(
                scan_ports("127.0.0.1", ports, timeout=30, on_result=on_result)
            )
            await asyncio.wait_for(first.wait(), 10)
            scan.cancel()
            with pytest.raises(asyncio.CancelledError):
                await scan

        run(main)
        assert in_flight_when_cancelled == [10]
        assert _socket_fds() - baseline == set()


def test_an_exception_from_on_result_ends_the_scan_and_closes_every_socket(
    run: Runner,
) -> None:
    with black_holes(5) as holes, reserved_ports(1) as (refusing,):
        baseline = _socket_fds()

        def on_result(result: PortResult) -> None:
            raise RuntimeError(f"stop at {result.port}")

        async def main() -> None:
            await scan_ports(
                "127.0.0.1", [*holes, refusing.getsockname()[1]], timeout=30, on_result=on_result
            )

        with pytest.raises(RuntimeError, match=f"stop at {refusing.getsockname()[1]}"):
            run(main)
        assert _socket_fds() - baseline == set()


@pytest.mark.parametrize(
    ("ports", "options", "error"),
    [
        ([0], {}, AddressError),
        ([65536], {}, AddressError),
        ([True], {}, TypeError),
        (["80"], {}, TypeError),
        ([80], {"concurrency": 0}, ValueError),
        ([80], {"concurrency": 1.5}, ValueError),
        ([80], {"timeout": 0}, ValueError),
        ([80], {"timeout": math.nan}, ValueError),
        ([80], {"timeout": math.inf}, ValueError),
        ([80], {"rate": 0}, ValueError),
        ([80], {"rate": -1.0}, ValueError),
        ([80], {"family": socket.AF_UNIX}, ValueError),
    ],
)
def test_bad_arguments_are_refused_before_any_lookup(
    run: Runner, ports: list[object], options: dict[str, object], error: type[Exception]
) -> None:
    resolver = FakeResolver({})

    async def main() -> list[PortResult]:
        return await scan_ports("127.0.0.1", ports, resolver=resolver, **options)  # type: ignore[arg-type]

    with pytest.raises(error):
        run(main)
    assert resolver.calls == []


def test_a_malformed_host_is_an_address_error(run: Runner) -> None:
    async def main() -> list[PortResult]:
        return await scan_ports("010.1.1.1", [80])

    with pytest.raises(AddressError):
        run(main)
