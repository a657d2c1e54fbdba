"""StdlibResolver: literals inline, names in bounded daemon workers, timeouts, Ctrl-C.

Only "localhost" and IP literals reach the real getaddrinfo; every other name is served
by a monkeypatched fake, so no test sends a DNS query.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sockit.addr import (
    AddrInfo,
    Resolver,
    SocketAddress,
    StdlibResolver,
    close_default_resolver,
    default_resolver,
)
from sockit.errors import AddressError, ResolutionError

if TYPE_CHECKING:
    from collections.abc import Iterator

SRC = Path(__file__).resolve().parents[2] / "src"
WAIT = 10.0  # upper bound on every wait in these tests; normally nothing waits this long

_real_getaddrinfo = socket.getaddrinfo


def resolver_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("sockit-resolver")}


class FakeGetaddrinfo:
    """Stands in for socket.getaddrinfo: records calls, optionally blocks until released."""

    def __init__(self, *, block: bool = False, error: OSError | None = None) -> None:
        self.block = block
        self.error = error
        self.calls: list[tuple[Any, int, int, str]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._started = threading.Condition(self._lock)

    def __call__(
        self, host: Any, port: Any, family: int = 0, type_: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        with self._lock:
            self.calls.append((host, port, flags, threading.current_thread().name))
            self._started.notify_all()
        if self.block and not self.release.wait(WAIT):
            raise AssertionError("the test never released this lookup")
        if self.error is not None:
            raise self.error
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]

    def wait_for_calls(self, count: int) -> None:
        with self._lock:
            assert self._started.wait_for(lambda: len(self.calls) >= count, WAIT)


@pytest.fixture
def resolver() -> Iterator[StdlibResolver]:
    before = resolver_threads()
    resolver = StdlibResolver()
    yield resolver
    resolver.close()
    assert resolver_threads() == before


@pytest.fixture
def fake(resolver: StdlibResolver, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGetaddrinfo]:
    # Requests `resolver` so that it is torn down after this: release, then close.
    fake = FakeGetaddrinfo()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    fake.release.set()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, int, str]]:
    """Wraps the real getaddrinfo, recording (host, flags, thread name) of each call."""
    calls: list[tuple[Any, int, str]] = []

    def recording(
        host: Any, port: Any, family: int = 0, type_: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        calls.append((host, flags, threading.current_thread().name))
        return _real_getaddrinfo(host, port, family, type_, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return calls


def test_stdlib_resolver_is_a_resolver() -> None:
    resolver: Resolver = StdlibResolver()
    assert isinstance(resolver, StdlibResolver)


@pytest.mark.parametrize(
    ("host", "family", "sockaddr"),
    [
        ("127.0.0.1", socket.AF_INET, ("127.0.0.1", 80)),
        ("::1", socket.AF_INET6, ("::1", 80, 0, 0)),
        ("[::1]", socket.AF_INET6, ("::1", 80, 0, 0)),
        ("0:0::1", socket.AF_INET6, ("::1", 80, 0, 0)),
    ],
)
def test_literals_resolve_in_the_calling_thread_with_numerichost(
    resolver: StdlibResolver,
    recorder: list[tuple[Any, int, str]],
    host: str,
    family: socket.AddressFamily,
    sockaddr: tuple[Any, ...],
) -> None:
    before = resolver_threads()
    answers = resolver.getaddrinfo(host, 80, timeout=WAIT)
    assert answers == [AddrInfo(family, socket.SOCK_STREAM, 6, "", sockaddr)]
    assert all(isinstance(answer, AddrInfo) for answer in answers)
    assert isinstance(answers[0].family, socket.AddressFamily)
    [(_, flags, thread_name)] = recorder
    assert flags & socket.AI_NUMERICHOST
    assert thread_name == threading.current_thread().name
    assert resolver_threads() == before


@pytest.mark.skipif(not hasattr(socket, "if_nametoindex"), reason="needs if_nametoindex")
def test_scoped_ipv6_literal_gets_its_scope_id(
    resolver: StdlibResolver, recorder: list[tuple[Any, int, str]]
) -> None:
    try:
        index = socket.if_nametoindex("lo")
    except OSError:
        pytest.skip("no interface named lo")
    [answer] = resolver.getaddrinfo("fe80::1%lo", 80)
    assert answer.sockaddr == ("fe80::1", 80, 0, index)
    with pytest.raises(ResolutionError, match=r"'fe80::1%nosuchif0'"):
        resolver.getaddrinfo("fe80::1%nosuchif0", 80)
    assert [thread for _, _, thread in recorder] == [threading.current_thread().name] * 2


def test_wildcard_resolves_in_the_calling_thread(
    resolver: StdlibResolver, recorder: list[tuple[Any, int, str]]
) -> None:
    answers = resolver.getaddrinfo(
        None, 8080, family=socket.AF_INET, flags=socket.AI_PASSIVE, timeout=WAIT
    )
    assert [answer.address for answer in answers] == [
        SocketAddress(socket.AF_INET, "0.0.0.0", 8080)
    ]
    assert [thread for _, _, thread in recorder] == [threading.current_thread().name]


def test_localhost_resolves_in_a_daemon_worker(
    resolver: StdlibResolver, recorder: list[tuple[Any, int, str]]
) -> None:
    answers = resolver.getaddrinfo("localhost", 80, timeout=WAIT)
    assert answers
    for answer in answers:
        address = answer.address
        assert address.port == 80
        assert address.host in {"127.0.0.1", "::1"} or address.host.startswith("127.")
    [(host, _, thread_name)] = recorder
    assert host == b"localhost"
    assert thread_name.startswith("sockit-resolver_")
    workers = resolver_threads()
    assert workers
    assert all(worker.daemon for worker in workers)


def test_gaierror_becomes_a_chained_resolution_error(
    resolver: StdlibResolver, fake: FakeGetaddrinfo
) -> None:
    fake.error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(ResolutionError) as info:
        resolver.getaddrinfo("bücher.example", 80, timeout=WAIT)
    error = info.value
    assert isinstance(error, OSError)
    assert isinstance(error.__cause__, socket.gaierror)
    assert error.errno == socket.EAI_NONAME
    assert error.host == "bücher.example"
    assert str(error) == "cannot resolve 'bücher.example': Name or service not known"
    # What reached getaddrinfo is the checked, IDNA 2008 encoded name.
    assert [host for host, _, _, _ in fake.calls] == [b"xn--bcher-kva.example"]


def test_gaierror_for_a_literal_is_a_resolution_error(
    resolver: StdlibResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_FAMILY, "ai_family not supported")

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    with pytest.raises(ResolutionError, match=r"'::1': ai_family not supported") as info:
        resolver.getaddrinfo("::1", 80, family=socket.AF_INET)
    assert isinstance(info.value.__cause__, socket.gaierror)


def test_lookup_times_out_and_names_the_host(
    resolver: StdlibResolver, fake: FakeGetaddrinfo
) -> None:
    fake.block = True
    started = time.monotonic()
    with pytest.raises(
        TimeoutError, match=r"resolving 'slow\.example' timed out after 0\.05"
    ) as info:
        resolver.getaddrinfo("slow.example", 80, timeout=0.05)
    assert not isinstance(info.value, ResolutionError)
    assert time.monotonic() - started < WAIT / 2
    fake.wait_for_calls(1)  # the lookup did start; release and close happen in teardown


@pytest.mark.parametrize("timeout", [None, math.inf, 0.0, WAIT])
def test_accepted_timeouts(
    resolver: StdlibResolver, fake: FakeGetaddrinfo, timeout: float | None
) -> None:
    if timeout == 0.0:
        fake.block = True
        with pytest.raises(TimeoutError):
            resolver.getaddrinfo("name.example", 80, timeout=timeout)
    else:
        assert resolver.getaddrinfo("name.example", 80, timeout=timeout)[0].sockaddr == (
            "192.0.2.1",
            80,
        )


@pytest.mark.parametrize("timeout", [-1.0, math.nan, -math.inf])
def test_bad_timeouts_are_value_errors(resolver: StdlibResolver, timeout: float) -> None:
    with pytest.raises(ValueError, match=r"timeout must be >= 0"):
        resolver.getaddrinfo("127.0.0.1", 80, timeout=timeout)


@pytest.mark.parametrize("port", [65536, -1, 99999])
def test_ports_are_checked_before_any_lookup(
    resolver: StdlibResolver, fake: FakeGetaddrinfo, port: int
) -> None:
    for host in ("name.example", "127.0.0.1", None):
        with pytest.raises(AddressError, match=r"a port is a number 0-65535"):
            resolver.getaddrinfo(host, port)
    assert fake.calls == []


@pytest.mark.parametrize("port", [True, "80", 80.0])
def test_non_int_ports_are_type_errors(
    resolver: StdlibResolver, fake: FakeGetaddrinfo, port: Any
) -> None:
    with pytest.raises(TypeError, match=r"port must be an int"):
        resolver.getaddrinfo("name.example", port)
    assert fake.calls == []


@pytest.mark.parametrize("host", ["127.1", "010.1.1.1", "2130706433", "a b"])
def test_unchecked_hosts_never_reach_getaddrinfo(
    resolver: StdlibResolver, fake: FakeGetaddrinfo, host: str
) -> None:
    with pytest.raises(AddressError):
        resolver.getaddrinfo(host, 80)
    assert fake.calls == []


def test_pool_is_bounded_and_queued_lookups_count_against_their_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = resolver_threads()
    fake = FakeGetaddrinfo(block=True)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    resolver = StdlibResolver(max_workers=2)
    results: list[object] = []

    def call(name: str) -> None:
        results.append(resolver.getaddrinfo(name, 80, timeout=WAIT))

    callers = [threading.Thread(target=call, args=(f"n{i}.example",)) for i in range(2)]
    try:
        for caller in callers:
            caller.start()
        fake.wait_for_calls(2)
        assert len(resolver_threads() - before) == 2
        # Both workers are busy: a third lookup waits in the queue and times out there.
        with pytest.raises(TimeoutError, match=r"'n2\.example'"):
            resolver.getaddrinfo("n2.example", 80, timeout=0.05)
        assert len(resolver_threads() - before) == 2
    finally:
        fake.release.set()
        for caller in callers:
            caller.join(WAIT)
        resolver.close()
    assert len(results) == 2
    # The timed-out lookup was cancelled while queued, so it never ran.
    assert sorted(host for host, _, _, _ in fake.calls) == [b"n0.example", b"n1.example"]
    assert resolver_threads() == before


def test_ctrl_c_interrupts_the_wait(resolver: StdlibResolver, fake: FakeGetaddrinfo) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT does not raise KeyboardInterrupt in this process")
    fake.block = True
    main_thread_id = threading.main_thread().ident
    assert main_thread_id is not None

    def press_ctrl_c() -> None:
        fake.wait_for_calls(1)
        signal.pthread_kill(main_thread_id, signal.SIGINT)

    helper = threading.Thread(target=press_ctrl_c)
    helper.start()
    try:
        # The timeout is far away: only the signal can end this wait early.
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            resolver.getaddrinfo("slow.example", 80, timeout=WAIT * 3)
        assert time.monotonic() - started < WAIT
    finally:
        helper.join(WAIT)
    assert not helper.is_alive()


def test_close_is_idempotent_and_the_resolver_stays_usable(
    resolver: StdlibResolver, fake: FakeGetaddrinfo
) -> None:
    before = resolver_threads()
    assert resolver.getaddrinfo("one.example", 80, timeout=WAIT)
    assert len(resolver_threads() - before) == 1
    resolver.close()
    resolver.close()
    assert resolver_threads() == before
    assert resolver.getaddrinfo("two.example", 80, timeout=WAIT)
    assert len(resolver_threads() - before) == 1


def test_close_waits_for_running_lookups(resolver: StdlibResolver, fake: FakeGetaddrinfo) -> None:
    fake.block = True
    results: list[object] = []
    caller = threading.Thread(
        target=lambda: results.append(resolver.getaddrinfo("name.example", 80, timeout=WAIT))
    )
    caller.start()
    try:
        fake.wait_for_calls(1)
        fake.release.set()
        resolver.close()
    finally:
        fake.release.set()
        caller.join(WAIT)
    assert len(results) == 1


def test_default_resolver_is_one_lazily_created_stdlib_resolver() -> None:
    before = resolver_threads()
    resolver = default_resolver()
    assert resolver is default_resolver()
    assert isinstance(resolver, StdlibResolver)
    try:
        assert resolver.getaddrinfo("localhost", 80, timeout=WAIT)
        assert resolver_threads() - before
    finally:
        close_default_resolver()
        close_default_resolver()
    assert resolver_threads() == before
    assert default_resolver() is resolver


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_lookups_work_in_a_forked_child(resolver: StdlibResolver, fake: FakeGetaddrinfo) -> None:
    # The parent's worker exists (and is idle) at fork time; the child has no such thread.
    assert resolver.getaddrinfo("name.example", 80, timeout=WAIT)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if resolver.getaddrinfo("name.example", 80, timeout=WAIT / 2) else 2
        except TimeoutError:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_stuck_lookup_does_not_keep_the_process_alive() -> None:
    # With ThreadPoolExecutor this child would hang at exit, joining its worker.
    code = (
        "import socket, threading\n"
        "from sockit.addr import StdlibResolver\n"
        "socket.getaddrinfo = lambda *args: threading.Event().wait()\n"
        "try:\n"
        "    StdlibResolver().getaddrinfo('stuck.example', 80, timeout=0.05)\n"
        "except TimeoutError as exc:\n"
        "    print(exc)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        env=environment,
        check=True,
    )
    assert "resolving 'stuck.example' timed out" in result.stdout


def test_errno_of_a_timeout_is_not_a_resolution_errno(
    resolver: StdlibResolver, fake: FakeGetaddrinfo
) -> None:
    fake.block = True
    with pytest.raises(TimeoutError) as info:
        resolver.getaddrinfo("slow.example", 80, timeout=0.01)
    assert info.value.errno in {None, errno.ETIMEDOUT}
