"""Test-suite guards: every test must leave no file descriptor, thread or child process behind.

The autouse fixture :func:`_no_leaks` snapshots the process before each test and, after
it, fails the test (as an error in its teardown) if it left open file descriptors, live
threads or un-reaped child processes, naming each one: ``fd 7 -> socket:[123]``, the
thread's name, the child's pid and command line. Leftovers get a grace period of
:data:`GRACE_SECONDS` to go away by themselves (a thread finishing its last callback, a
child being reaped by the code that waits for it) before they count as leaks.

Deliberately not leaks:

* threads named ``sockit-resolver*``: the long-lived daemon pool behind
  ``StdlibResolver``, created on first use and kept for the life of the process;
* the helper processes :mod:`multiprocessing` starts once and keeps
  (``resource_tracker``, ``forkserver``);
* anything created before the test started (session or module fixtures, plugins), and
  the process-wide resources that :func:`pytest_sessionstart` creates once up front
  because libraries create them lazily and keep them (libuv's signal pipe, made by the
  first uvloop loop).

A test that must leak (rare; say why in a comment) opts out with
``@pytest.mark.allow_leaks``. A test that already failed is not checked again: its leaks
are a consequence of the failure and would only bury the real error.

Garbage is collected only when something looks leaked, since an fd that only garbage
holds is closed by the collection (its ResourceWarning then fails this test, not a later
one), and a full collection costs about 20 ms per test.

This module must never import sockit (the guard has to work while sockit is broken) and
must never reap, kill or close anything itself: it only observes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest
from hypothesis import settings

# Hypothesis: no per-example deadline (a 2-core shared machine, or the first lazy import
# of a module, easily takes longer than the default 200 ms and fails a correct test);
# in CI the examples are derandomized so a red run can be reproduced exactly.
settings.register_profile("sockit", deadline=None)
settings.register_profile("sockit-ci", deadline=None, derandomize=True, database=None)
settings.load_profile("sockit-ci" if os.environ.get("CI") else "sockit")

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator, Iterator

pytest_plugins = ["pytester"]

# Long enough for a thread to run its last callback or a reaper thread to collect its
# child on a loaded CI machine; short enough that a genuine leak is reported promptly.
GRACE_SECONDS = 2.0
# How often leftovers are re-examined during the grace period; together with
# GRACE_SECONDS this bounds the loop (at most about 200 rounds).
POLL_SECONDS = 0.01

ALLOWED_THREAD_PREFIXES = ("sockit-resolver",)
# Command-line fragments of long-lived helper processes the standard library starts once
# per process and keeps on purpose.
ALLOWED_CHILD_COMMANDS = (
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
)

ALLOW_LEAKS_MARKER = "allow_leaks"


def pytest_configure(config: pytest.Config) -> None:
    """Register the opt-out marker where pyproject.toml does not (e.g. pytester runs)."""
    registered = config.getini("markers")
    if not any(line.split(":", 1)[0].strip() == ALLOW_LEAKS_MARKER for line in registered):
        config.addinivalue_line(
            "markers",
            f"{ALLOW_LEAKS_MARKER}: this test may leave fds, threads or child processes "
            "behind (say why in a comment)",
        )


_REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Create the process-wide resources that libraries allocate once, on first use.

    Otherwise whichever test happens to run first would be blamed for them.
    """
    del session  # part of the hook's signature
    try:
        import uvloop  # noqa: PLC0415 - optional, and only needed once
    except ImportError:
        return
    # The first libuv loop opens a pipe that libuv keeps for the life of the process
    # (uv__signal_global_once_init); later loops reuse it.
    uvloop.new_event_loop().close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so teardown can tell a failed test."""
    del call  # part of the hook's signature; the report says everything needed
    report = yield
    item.stash.setdefault(_REPORTS_KEY, {})[report.when] = report
    return report


def failed_before_teardown(item: pytest.Item) -> bool:
    """Whether set-up or the test itself failed (an expected failure counts as failed)."""
    reports = item.stash.get(_REPORTS_KEY, {}).values()
    return any(report.failed or hasattr(report, "wasxfail") for report in reports)


# --- snapshots ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the process holds at one moment."""

    # fd -> (st_dev, st_ino): identifies the open object, so a number that was closed
    # and reused for something else is noticed, while renames and unlinks are not.
    fds: dict[int, tuple[int, int]]
    threads: frozenset[threading.Thread]
    children: frozenset[int]


def open_fds() -> dict[int, tuple[int, int]]:
    """Every open descriptor of this process except the one used to list them."""
    directory = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Listing through our own descriptor lets us leave exactly that one out.
        numbers = [int(name) for name in os.listdir(directory)]
    finally:
        os.close(directory)
    fds: dict[int, tuple[int, int]] = {}
    for fd in numbers:
        if fd == directory:
            continue
        try:
            status = os.fstat(fd)
        except OSError:
            # Closed meanwhile by another thread: not open, so not a leak.
            continue
        fds[fd] = (status.st_dev, status.st_ino)
    return fds


def describe_fd(fd: int) -> str:
    """``fd 7 -> socket:[1234]``, or what is known when the link cannot be read."""
    try:
        target = str(Path(f"/proc/self/fd/{fd}").readlink())
    except OSError as error:
        target = f"<unreadable: {error.strerror}>"
    return f"fd {fd} -> {target}"


def child_pids() -> frozenset[int]:
    """Pids whose parent is this process, including zombies not yet reaped.

    Reads ``/proc/<pid>/task/<tid>/children`` (a child is listed under the thread that
    forked it); without that file (kernels lacking CONFIG_PROC_CHILDREN) falls back to
    scanning every ``/proc/<pid>/stat`` for our pid as the parent.
    """
    pid = os.getpid()
    tasks = Path(f"/proc/{pid}/task")
    pids: set[int] = set()
    try:
        task_dirs = list(tasks.iterdir())
    except OSError:
        task_dirs = []
    readable = False
    for task in task_dirs:
        try:
            text = (task / "children").read_text(encoding="ascii")
        except FileNotFoundError:
            # Either the thread just ended or the kernel lacks the file; the fallback below
            # decides which, as long as no task had the file.
            continue
        except OSError:
            continue
        readable = True
        pids.update(int(word) for word in text.split())
    if readable:
        return frozenset(pids)
    return frozenset(_child_pids_by_scan(pid))


def _child_pids_by_scan(parent: int) -> set[int]:
    """Slow path of :func:`child_pids`: every process whose ppid is ``parent``."""
    pids: set[int] = set()
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            stat = (process / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may contain spaces or ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            pids.add(int(process.name))
    return pids


def describe_child(pid: int) -> str:
    """``pid 123 (state Z) sleep 30``; the state shows zombies, which need a wait()."""
    state = "?"
    command = "?"
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        state = stat[stat.rfind(")") + 2 :].split()[0]
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip() or command
    return f"pid {pid} (state {state}) {command}"


def child_is_allowed(pid: int) -> bool:
    """True for the stdlib's long-lived helper processes."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return False
    return any(fragment in command for fragment in ALLOWED_CHILD_COMMANDS)


def thread_is_allowed(thread: threading.Thread) -> bool:
    """True for the long-lived resolver pool threads."""
    return thread.name.startswith(ALLOWED_THREAD_PREFIXES)


def describe_thread(thread: threading.Thread) -> str:
    """``'worker' (daemon, ident 1403)``."""
    kind = "daemon" if thread.daemon else "non-daemon"
    return f"{thread.name!r} ({kind}, ident {thread.ident})"


def take_snapshot(*, collect_garbage: bool = False) -> Snapshot:
    """Record fds, threads and children, after a garbage collection if asked."""
    if collect_garbage:
        gc.collect()
    return Snapshot(
        fds=open_fds(),
        threads=frozenset(threading.enumerate()),
        children=child_pids(),
    )


# --- comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaks:
    """What a test left behind, relative to the snapshot before it."""

    fds: list[int]
    threads: list[threading.Thread]
    children: list[int]

    def __bool__(self) -> bool:
        return bool(self.fds or self.threads or self.children)

    def describe(self) -> str:
        """A multi-line message naming every leaked resource."""
        lines = ["test leaked resources (close/join/wait them, or mark @pytest.mark.allow_leaks):"]
        if self.fds:
            lines.append(f"  {len(self.fds)} file descriptor(s):")
            lines.extend(f"    {describe_fd(fd)}" for fd in self.fds)
        if self.threads:
            lines.append(f"  {len(self.threads)} thread(s):")
            lines.extend(f"    {describe_thread(thread)}" for thread in self.threads)
        if self.children:
            lines.append(f"  {len(self.children)} child process(es):")
            lines.extend(f"    {describe_child(pid)}" for pid in self.children)
        return "\n".join(lines)


def find_leaks(before: Snapshot, *, collect_garbage: bool = True) -> Leaks:
    """Resources present now that were not there at ``before``.

    Collecting garbage first closes what only unreachable objects still held (a socket
    in a reference cycle), and pins the resulting ResourceWarning on this test.
    """
    now = take_snapshot(collect_garbage=collect_garbage)
    fds = sorted(fd for fd, identity in now.fds.items() if before.fds.get(fd) != identity)
    threads = sorted(
        (
            thread
            for thread in now.threads - before.threads
            if thread.is_alive() and not thread_is_allowed(thread)
        ),
        key=lambda thread: thread.name,
    )
    children = sorted(pid for pid in now.children - before.children if not child_is_allowed(pid))
    return Leaks(fds=fds, threads=threads, children=children)


def wait_for_leaks_to_clear(before: Snapshot, deadline: float) -> Leaks:
    """Re-check until nothing leaks or ``deadline`` (a monotonic time) passes.

    There is no event to wait on for "the last fd was closed" or "someone reaped the
    child", so this polls, bounded by the deadline; threads are joined directly.
    """
    # Fast path without a garbage collection (about 20 ms each with hypothesis loaded):
    # when nothing new is open, there is nothing a collection could close either.
    leaks = find_leaks(before, collect_garbage=False)
    for _ in range(int(GRACE_SECONDS / POLL_SECONDS) + 1):
        if not leaks or time.monotonic() >= deadline:
            break
        for thread in leaks.threads:
            # A dummy thread stands for a thread started outside `threading`; it cannot be
            # joined, only reported.
            if not isinstance(thread, threading._DummyThread):
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        time.sleep(POLL_SECONDS)
        leaks = find_leaks(before)
    return leaks


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves fds, threads or child processes behind (see module doc)."""
    if request.node.get_closest_marker(ALLOW_LEAKS_MARKER) is not None:
        yield
        return
    before = take_snapshot()
    yield
    if failed_before_teardown(request.node):
        # Attribute to this test the ResourceWarnings of what its failure left behind.
        gc.collect()
        return
    leaks = wait_for_leaks_to_clear(before, time.monotonic() + GRACE_SECONDS)
    if leaks:
        pytest.fail(leaks.describe(), pytrace=False)


# --- async backends ---------------------------------------------------------------------
# Every sockit.aio test runs on both backends: asyncio's own loop and uvloop. Tests take the
# ``run`` fixture and call ``run(coroutine_function, *args)``: it creates a fresh loop of the
# test's backend (the ``backend`` fixture, parametrized over BACKENDS), runs the coroutine,
# and closes the loop, so every loop is closed before the leak check looks at fds and
# threads. It fails the test if the coroutine left tasks running or the loop reported an
# error through its exception handler. No pytest-asyncio: a plain runner keeps the loop's
# life visible in each test. (Here rather than in tests/aio/conftest.py: a second
# conftest module would shadow this one for `import conftest` and confuse mypy.)

BACKENDS = ("asyncio", "uvloop")

_T = TypeVar("_T")


class Runner(Protocol):
    """The type of the ``run`` fixture."""

    def __call__(
        self, function: Callable[..., Coroutine[Any, Any, _T]], /, *args: object
    ) -> _T: ...


def loop_factory(backend: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function creating a new loop of ``backend`` ("asyncio" or "uvloop")."""
    if backend == "asyncio":
        return asyncio.SelectorEventLoop
    if backend == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ValueError(f"unknown backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The event loop implementation of this test run."""
    name: str = request.param
    loop_factory(name)  # skips the uvloop runs where uvloop is not installed
    return name


def run_on(backend: str, function: Callable[..., Coroutine[Any, Any, _T]], *args: object) -> _T:
    """Run ``function(*args)`` on a new loop of ``backend``; close the loop; return the
    result. Fails if tasks were left running or the loop reported an error."""
    reported: list[dict[str, Any]] = []

    async def main() -> _T:
        result = await function(*args)
        current = asyncio.current_task()
        leftover = [task for task in asyncio.all_tasks() if task is not current]
        if leftover:
            for task in leftover:
                task.cancel()
            await asyncio.wait(leftover, timeout=5)
            names = ", ".join(sorted(task.get_name() for task in leftover))
            pytest.fail(f"the test left tasks running: {names}")
        return result

    with asyncio.Runner(loop_factory=loop_factory(backend)) as runner:
        runner.get_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        result = runner.run(main())
    if reported:
        messages = "; ".join(
            f"{context.get('message')}: {context.get('exception')!r}" for context in reported
        )
        pytest.fail(f"the event loop reported errors: {messages}")
    return result


@pytest.fixture
def run(backend: str) -> Runner:
    """``run(coroutine_function, *args)`` on a fresh loop of this test's backend."""

    def runner(function: Callable[..., Coroutine[Any, Any, _T]], /, *args: object) -> _T:
        return run_on(backend, function, *args)

    return runner
