"""Signal handling for servers: shutdown handlers in the parent, clean dispositions in children.

* :func:`install_shutdown_handlers` puts a handler on ``SIGTERM``/``SIGINT`` for the
  duration of ``serve_forever`` (main thread only, as Python requires) and gives back a
  function that restores exactly what was there before.
* :func:`reset_child_signals` runs first thing in a forked child (a fork-mode connection
  process or a worker): every handler written in Python is reset to ``SIG_DFL`` (the
  parent's handlers act on the parent's objects, which mean nothing in the child),
  ``signal.set_wakeup_fd`` is cleared (its fd is the parent's: asyncio's self-pipe, for
  instance, and the child may close that number and reuse it for a connection), and
  ``SIGINT`` is ignored: a terminal sends Ctrl-C to the whole foreground process group,
  and the parent owns the shutdown policy (drain, then abort), so a child must not die
  of the same keystroke before the drain has had its chance.

Ignored signals stay ignored (CPython ignores ``SIGPIPE`` and ``SIGXFSZ`` so that writes
fail with an error instead of killing the process; a Python child wants the same).

A shutdown handler installed here must never block, take a lock or log: it runs in the
main thread between two bytecodes, possibly while that thread holds the very lock it
would wait for. Handlers only record the signal and poke a self-pipe.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

__all__ = [
    "SHUTDOWN_SIGNALS",
    "install_shutdown_handlers",
    "reset_child_signals",
    "signal_name",
]

SHUTDOWN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
"""What a server in the main thread treats as "please stop": the first one drains, the
second aborts (see :meth:`sockit.serve.Server.serve_forever`)."""


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; the number for a signal Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def install_shutdown_handlers(
    on_signal: Callable[[int], None],
    signals: Iterable[signal.Signals] = SHUTDOWN_SIGNALS,
    *,
    ignore: Iterable[signal.Signals] = (),
    wakeup_fd: int = -1,
) -> Callable[[], None]:
    """Route ``signals`` to ``on_signal(signum)``, ignore ``ignore``; return a restorer.

    Must be called from the main thread (``ValueError`` otherwise, from
    :func:`signal.signal`). The restorer puts back every previous disposition and is
    idempotent. A previous handler that was not installed from Python
    (``signal.getsignal`` returns ``None``) cannot be put back; it is then left as
    ``SIG_DFL``, the only truthful choice Python offers.

    ``wakeup_fd`` (a non-blocking fd the main thread polls) becomes
    :func:`signal.set_wakeup_fd` meanwhile. That is what makes a signal reliable with
    threads around: the kernel may deliver it to any thread, and then only the C-level
    handler runs there; the Python handler waits for the main thread's next bytecode,
    which never comes while the main thread sleeps in ``poll``, unless a byte written
    to a polled fd wakes it.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame  # part of the signal handler signature
        on_signal(signum)

    previous: list[tuple[signal.Signals, signal._HANDLER]] = []
    previous_wakeup_fd: int | None = None
    try:
        for signum in signals:
            previous.append((signum, signal.getsignal(signum)))
            signal.signal(signum, handler)
        for signum in ignore:
            previous.append((signum, signal.getsignal(signum)))
            signal.signal(signum, signal.SIG_IGN)
        if wakeup_fd >= 0:
            previous_wakeup_fd = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
    except BaseException:
        _restore(previous)
        raise
    restored = False

    def restore() -> None:
        nonlocal restored
        if not restored:
            restored = True
            if previous_wakeup_fd is not None:
                signal.set_wakeup_fd(previous_wakeup_fd)
            _restore(previous)

    return restore


def _restore(previous: list[tuple[signal.Signals, signal._HANDLER]]) -> None:
    # Reverse order: a signal listed twice gets its first (original) disposition back.
    for signum, handler in reversed(previous):
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def reset_child_signals(*, terminate: Callable[[int, FrameType | None], None] | None) -> None:
    """Give a freshly forked child clean signal dispositions (see the module docstring).

    ``terminate``, if given, becomes the ``SIGTERM`` handler (a fork-mode child uses it
    to abort its connection with an RST before exiting); otherwise ``SIGTERM`` has its
    default action, or the handler the caller installs next.
    """
    # The wakeup fd belongs to the parent (asyncio's self-pipe, libuv's signal pipe):
    # writing a byte to it from the child, after the number was closed and reused for a
    # connection, would inject data into that connection.
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            current = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(current):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if terminate is not None:
        signal.signal(signal.SIGTERM, terminate)
