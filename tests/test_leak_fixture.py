"""Proof that the leak guard in conftest.py catches leaks, names them, and stays quiet otherwise.

Each case runs a small inner test suite with the real conftest.py in a separate pytest
process (pytester's subprocess mode): the inner tests leak on purpose, and a leak must
never reach this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent
from typing import TYPE_CHECKING

import conftest

if TYPE_CHECKING:
    import pytest

REAL_GRACE = f"GRACE_SECONDS = {conftest.GRACE_SECONDS!r}\n"
# The real guard with a shorter grace period, so that each deliberate leak costs this
# suite half a second instead of two; everything else is the code under test, verbatim.
CONFTEST_SOURCE = (
    (Path(__file__).parent / "conftest.py")
    .read_text(encoding="utf-8")
    .replace(REAL_GRACE, "GRACE_SECONDS = 0.5\n", 1)
)

# The project's strictness, without reading the project's pyproject.toml.
INNER_INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
timeout = 60
"""


def test_inner_guard_is_the_real_one_with_a_shorter_grace() -> None:
    assert "GRACE_SECONDS = 0.5\n" in CONFTEST_SOURCE
    assert REAL_GRACE not in CONFTEST_SOURCE


def run_inner(
    pytester: pytest.Pytester, source: str, *, hypothesis_plugin: bool = False
) -> pytest.RunResult:
    """Run ``source`` as test_inner.py under the real leak guard, in a child pytest.

    Hypothesis's pytest plugin costs about a second of start-up, so it is loaded only
    where its interplay with the guard is the point.
    """
    pytester.makeconftest(CONFTEST_SOURCE)
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_inner=dedent(source))
    options = [] if hypothesis_plugin else ["-p", "no:hypothesispytest"]
    return pytester.runpytest_subprocess("-v", *options, timeout=120)


def test_clean_test_passes(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import os
        import socket
        import subprocess
        import sys
        import threading

        def test_closes_joins_and_waits():
            left, right = socket.socketpair()
            with left, right:
                left.sendall(b"x")
                assert right.recv(1) == b"x"
            read_end, write_end = os.pipe()
            os.close(read_end)
            os.close(write_end)
            worker = threading.Thread(target=lambda: None, name="short-worker")
            worker.start()
            worker.join()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        """,
    )
    result.assert_outcomes(passed=1)
    assert "leaked" not in result.stdout.str()


def test_leaked_fd_is_an_error_naming_the_fd(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import os

        KEPT = []

        def test_leaks_a_pipe():
            KEPT.extend(os.pipe())
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_pipe*",
            "*test leaked resources*",
            "*2 file descriptor(s):",
            "*fd * -> pipe:[[]*]",
            "*fd * -> pipe:[[]*]",
        ]
    )


def test_leaked_thread_is_an_error_naming_the_thread(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import threading

        NEVER = threading.Event()

        def test_leaks_a_thread():
            threading.Thread(target=NEVER.wait, name="leaky-worker", daemon=True).start()
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*test leaked resources*", "*1 thread(s):", "*'leaky-worker' (daemon, ident *)"]
    )


def test_leaked_child_processes_are_an_error_naming_them(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import subprocess
        import sys

        KEPT = []

        def test_leaks_a_zombie():
            # Exits at once but is never waited for: a zombie that only wait() removes.
            KEPT.append(subprocess.Popen([sys.executable, "-c", "pass"]))

        def test_leaks_a_running_child():
            # Ends by itself when this pytest process exits and closes the pipe.
            child = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"],
                stdin=subprocess.PIPE,
            )
            KEPT.append(child)
        """,
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_zombie*",
            "*1 child process(es):",
            "*pid * (state Z) *",
            "*ERROR at teardown of test_leaks_a_running_child*",
            "*1 file descriptor(s):",
            "*fd * -> pipe:[[]*]",
            "*1 child process(es):",
            "*pid * (state S) * -c import sys; sys.stdin.buffer.read()",
        ]
    )


def test_socket_held_only_by_garbage_is_blamed_on_its_own_test(
    pytester: pytest.Pytester,
) -> None:
    result = run_inner(
        pytester,
        """
        import socket

        class Holder:
            pass

        def test_drops_a_socket_in_a_cycle():
            holder = Holder()
            holder.itself = holder
            holder.sock = socket.socket()

        def test_innocent_bystander():
            pass
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_drops_a_socket_in_a_cycle*",
            "*ResourceWarning*unclosed*socket*",
        ]
    )


def test_leftovers_that_go_away_within_the_grace_period_pass(
    pytester: pytest.Pytester,
) -> None:
    result = run_inner(
        pytester,
        """
        import subprocess
        import sys
        import threading

        def test_thread_ends_shortly_after_the_test():
            threading.Timer(0.1, lambda: None).start()

        def test_child_reaped_shortly_after_the_test():
            child = subprocess.Popen([sys.executable, "-c", "pass"])
            threading.Thread(target=child.wait, name="reaper").start()
        """,
    )
    result.assert_outcomes(passed=2)


def test_allowed_threads_and_marker_pass(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import os
        import threading

        import pytest

        NEVER = threading.Event()
        KEPT = []

        def test_resolver_pool_thread_is_long_lived():
            name = "sockit-resolver-0"
            threading.Thread(target=NEVER.wait, name=name, daemon=True).start()

        @pytest.mark.allow_leaks
        def test_opted_out():
            KEPT.extend(os.pipe())
        """,
    )
    result.assert_outcomes(passed=2)


def test_failing_test_is_not_reported_twice(pytester: pytest.Pytester) -> None:
    result = run_inner(
        pytester,
        """
        import os

        KEPT = []

        def test_fails_and_leaks():
            KEPT.extend(os.pipe())
            raise AssertionError("the real problem")
        """,
    )
    result.assert_outcomes(failed=1)
    assert "leaked" not in result.stdout.str()


def test_uvloop_hypothesis_and_pytest_timeout_do_not_trigger_it(
    pytester: pytest.Pytester,
) -> None:
    result = run_inner(
        pytester,
        """
        import asyncio
        import socket

        import pytest
        import uvloop
        from hypothesis import given, settings, strategies as st

        def test_first_uvloop_loop_of_the_process():
            loop = uvloop.new_event_loop()
            try:
                loop.run_until_complete(asyncio.sleep(0))
            finally:
                loop.close()

        @settings(max_examples=25, deadline=None)
        @given(st.binary(max_size=512))
        def test_roundtrip(data):
            left, right = socket.socketpair()
            with left, right:
                left.sendall(data)
                left.shutdown(socket.SHUT_WR)
                received = b""
                for _ in range(len(data) + 1):
                    chunk = right.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                assert received == data

        @pytest.mark.timeout(30, method="thread")
        def test_under_thread_timeout():
            pass

        @pytest.mark.timeout(30, method="thread", func_only=True)
        def test_under_function_only_thread_timeout():
            pass

        @pytest.mark.timeout(30, method="signal")
        def test_under_signal_timeout():
            pass
        """,
        hypothesis_plugin=True,
    )
    result.assert_outcomes(passed=5)


def test_fd_number_reused_for_another_file_counts_as_a_leak() -> None:
    read_end, write_end = os.pipe()
    try:
        before = conftest.take_snapshot()
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, read_end)  # same number, different open file
            leaks = conftest.find_leaks(before)
            report = leaks.describe()
        finally:
            os.close(null)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert leaks.fds == sorted([read_end, null])
    assert not leaks.threads
    assert not leaks.children
    assert f"fd {read_end} -> /dev/null" in report
    assert f"fd {null} -> /dev/null" in report


def test_both_ways_of_finding_children_agree() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"], stdin=subprocess.PIPE
    )
    try:
        assert child.pid in conftest.child_pids()
        assert child.pid in conftest._child_pids_by_scan(os.getpid())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert child.pid not in conftest.child_pids()
