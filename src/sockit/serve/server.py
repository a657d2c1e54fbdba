"""serve() and Server: a listener, a handler and a concurrency model, with the contracts.

``serve(handler, 8080)`` returns a :class:`Server` that is bound and listening (its
``addresses`` are real) but not yet accepting; ``serve_forever()`` runs it, ``start()``
runs it in a background thread (tests), ``shutdown()`` stops it. What it promises
(DESIGN.md, "Servers"):

* a handler exception is logged (logger ``sockit.serve``, with the connection's
  4-tuple) and ends that connection only: the stream is closed, the server goes on;
* transient accept errors are retried, resource errors (``EMFILE``...) back off without
  spinning or flooding the log, and service resumes by itself
  (:mod:`sockit.serve._accept`);
* shutdown stops accepting at once (the listener is closed: new connects are refused),
  lets active handlers finish for ``drain_timeout`` seconds, then aborts the rest with
  an RST. ``serve_forever`` in the main thread maps the first ``SIGTERM``/``SIGINT`` to
  that graceful shutdown and a second one to an immediate abort, and restores the
  previous handlers when it returns;
* fork servers reap every child and close every foreign fd in the child
  (:mod:`sockit.serve._fork`); ``workers=N`` supervises N processes on the one port
  (:mod:`sockit.serve._workers`).

**The mode strategy interface.** A concurrency model is a :class:`ModeRunner` built by
a factory ``(context: ServeContext) -> ModeRunner``. The server runs it like this:

* a *serving thread* (``sockit-accept``) calls ``runner.serve()`` (accept and start
  handlers until told to stop), then ``runner.wait_closed()`` (until every connection
  has ended);
* the *control thread* (the one in ``serve_forever``, the main thread when signals are
  handled) calls ``runner.stop_accepting()`` on shutdown, waits for the serving thread
  for the drain timeout, then calls ``runner.abort()``, and waits
  :data:`ABORT_GRACE` seconds more at most; ``shutdown()`` may also call
  ``stop_accepting()`` from its own thread, so that is thread-safe and idempotent.

A runner keeps ``context.counters`` current (``Stat.ACTIVE`` up and down with every
connection, ``ACCEPTED``, ``REFUSED``, ``DENIED``, ``ERRORS``, ``ACCEPT_ERRORS``); the
server reads them for ``stats`` and ``active_connections``, and across processes for
workers. It applies ``context.access_policy``, ``context.max_connections``,
``context.idle_timeout`` (as the stream's default timeout) and
``context.proxy_protocol`` as the sync modes do. The ``"async"`` mode is looked up in
``sockit.serve._async``, which must define ``AsyncMode(context) -> ModeRunner``; it
wraps ``context.listener.sockets`` in its own async listener and runs its event loop
in the serving thread (``serve()`` and ``wait_closed()`` each run it until their
condition holds; ``stop_accepting()`` and ``abort()`` reach it with
``call_soon_threadsafe``).

Must never let one connection's failure stop the server, block a signal handler, or
leave a thread, child process or fd behind after ``shutdown()`` returns.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeAlias, overload

from sockit.proto.access import AccessPolicy
from sockit.serve._accept import (
    Counters,
    SequentialMode,
    ServerStats,
    ThreadMode,
    Waker,
    in_handler,
)
from sockit.serve._fork import ForkMode
from sockit.serve._signals import install_shutdown_handlers, signal_name
from sockit.serve._workers import SharedCounters, WorkersRunner
from sockit.sync import SYSTEM_SOCKET_FACTORY, SocketListener, listen

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable
    from types import TracebackType

    from sockit.addr import SocketAddress
    from sockit.sync import SocketFactory, SocketStream

__all__ = [
    "ABORT_GRACE",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "MODES",
    "WORKER_DRAIN_MARGIN",
    "ModeFactory",
    "ModeRunner",
    "ServeContext",
    "Server",
    "ServerStats",
    "serve",
]

Mode = Literal["sequential", "thread", "fork", "async"]
MODES: tuple[Mode, ...] = ("sequential", "thread", "fork", "async")
"""The concurrency models ``serve(mode=...)`` accepts."""

DEFAULT_MAX_CONNECTIONS = 1000
"""Enough for any test or small service, well under the usual 1024-fd soft limit's
worth of threads or processes; raise it (and RLIMIT_NOFILE) for more."""
DEFAULT_DRAIN_TIMEOUT = 10.0
"""Seconds active handlers get to finish on shutdown (systemd's default stop timeout
is 90 s, Kubernetes' grace period 30 s: 10 s leaves room inside both)."""
ABORT_GRACE = 5.0
"""After the abort, how long the server waits for connections to end before it gives
up on them (a handler that ignores a reset socket and computes forever)."""
WORKER_DRAIN_MARGIN = 1.0
"""Extra seconds the parent of workers waits beyond ``drain_timeout``, so each worker
can abort its own connections at its own deadline before the parent forces it."""


@dataclass(frozen=True, eq=False)
class ServeContext:
    """What a :class:`ModeRunner` needs to serve: the handler, the listener and the
    per-connection rules. Built by the server; read-only for the runner."""

    mode: str
    handler: Callable[[Any], object]
    listener: SocketListener
    socket_factory: SocketFactory
    logger: logging.Logger
    counters: Counters
    max_connections: int
    idle_timeout: float | None
    access_policy: AccessPolicy | None
    proxy_protocol: bool
    listener_shared: bool
    """Other processes may hold the listening sockets (a worker's, a listener handed
    in with ``listener=``, e.g. by systemd): close them, never ``shutdown()`` them."""


class ModeRunner(Protocol):
    """One concurrency model, driven by :class:`Server` (see the module docstring)."""

    def serve(self) -> None:
        """Accept and start handlers until :meth:`stop_accepting`; runs in the serving
        thread. Raises the listener's fatal error (the server then drains and re-raises
        it from ``serve_forever``)."""
        ...

    def stop_accepting(self) -> None:
        """Close the listener now and make :meth:`serve` return. Any thread;
        idempotent; never blocks for long."""
        ...

    def wait_closed(self) -> None:
        """After :meth:`serve`, in the serving thread: return once every connection
        has ended and the runner's own resources (threads, fds) are released."""
        ...

    def abort(self) -> None:
        """End every active connection now with an RST. Called from the control
        thread; may block briefly (at most a few seconds)."""
        ...


ModeFactory: TypeAlias = Callable[[ServeContext], ModeRunner]
"""Builds a mode's runner for one server: ``SequentialMode``, ``ThreadMode``,
``ForkMode``, ``sockit.serve._async.AsyncMode``."""


def _mode_factory(mode: str) -> ModeFactory:
    if mode == "sequential":
        return SequentialMode
    if mode == "thread":
        return ThreadMode
    if mode == "fork":
        return ForkMode
    if mode == "async":
        try:
            module = importlib.import_module("sockit.serve._async")
        except ImportError as error:
            raise ValueError("the async mode is not available in this build") from error
        factory: ModeFactory = module.AsyncMode
        return factory
    raise ValueError(f"mode must be one of {', '.join(MODES)}; not {mode!r}")


@dataclass(frozen=True)
class _Config:
    handler: Callable[[Any], object]
    mode: str
    workers: int
    max_connections: int
    idle_timeout: float | None
    drain_timeout: float
    access_policy: AccessPolicy | None
    proxy_protocol: bool
    logger: logging.Logger
    socket_factory: SocketFactory
    owns_listener: bool


_READY = "ready"
_RUNNING = "running"
_CLOSED = "closed"


class Server:
    """A listening server; create it with :func:`serve`.

    Thread-safety: ``shutdown()``, ``stats``, ``active_connections`` may be called from
    any thread (``shutdown()`` from inside a handler only requests the shutdown, it
    does not wait for itself); ``serve_forever()``/``start()`` once per server.
    """

    def __init__(
        self,
        config: _Config,
        listener: SocketListener,
        *,
        worker: bool = False,
        counters: Counters | None = None,
    ) -> None:
        self._config = config
        self._listener = listener
        self._addresses = listener.addresses
        self._worker = worker
        self._shared: SharedCounters | None = None
        if config.workers > 1 and not worker:
            self._shared = SharedCounters(config.workers + 1)
            self._counters = self._shared.slot(0)
        else:
            self._counters = counters if counters is not None else Counters()
        self._control_waker = Waker()
        self._state_lock = threading.Lock()
        self._state = _READY
        self._runner: ModeRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._finished = threading.Event()
        # Written by shutdown(), signal handlers and the serving thread, read by the
        # control loop after each wake-up (plain attributes: a signal handler must
        # not take locks).
        self._stop_drain = config.drain_timeout
        self._stop_requested = False
        self._abort_requested = False
        self._signals: list[tuple[int, bool]] = []
        self._accepting_stopped = False
        self._serving_done = False
        self._serve_error: BaseException | None = None

    # --- what it is --------------------------------------------------------------

    @property
    def addresses(self) -> list[SocketAddress]:
        """The real bound addresses (port 0 already replaced), known from the start."""
        return list(self._addresses)

    @property
    def port(self) -> int:
        """The port the server listens on (TCP only)."""
        first = self._addresses[0]
        if first.is_unix:
            raise AttributeError("a UNIX server has no port")
        return first.port

    @property
    def mode(self) -> str:
        """``"sequential"``, ``"thread"``, ``"fork"`` or ``"async"``."""
        return self._config.mode

    @property
    def workers(self) -> int:
        """The number of worker processes (1: the server runs in this process)."""
        return 1 if self._worker else self._config.workers

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (empty unless ``workers > 1``)."""
        runner = self._runner
        if isinstance(runner, WorkersRunner):
            return runner.pids
        return []

    @property
    def stats(self) -> ServerStats:
        """The counters (see :class:`ServerStats`), summed over all workers."""
        if self._shared is not None:
            return self._shared.total()
        return self._counters.snapshot()

    @property
    def active_connections(self) -> int:
        """Connections being handled right now (in every worker)."""
        return self.stats.active

    def __repr__(self) -> str:
        where = ", ".join(map(str, self._addresses))
        workers = f" workers={self._config.workers}" if self.workers > 1 else ""
        return f"<Server mode={self.mode}{workers} {self._state} on {where}>"

    # --- running -----------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` or a signal; block the calling thread.

        In the main thread, ``SIGTERM`` and ``SIGINT`` get handlers for the duration:
        the first one stops accepting and drains for ``drain_timeout`` seconds, a
        second one aborts every connection at once; the previous handlers are restored
        before this returns. (A worker process of ``workers=N`` ignores ``SIGINT``:
        its parent receives the same Ctrl-C and forwards ``SIGTERM``.)

        Returns after every connection has ended. Raises the listener's fatal error
        (after the same drain), ``RuntimeError`` if the server was already started.
        """
        self._begin()
        self._serve_forever()

    def start(self) -> None:
        """Run :meth:`serve_forever` in a background thread (``sockit-server``) and
        return at once. Meant for tests and embedding; stop it with :meth:`shutdown`,
        which joins the thread (no signal handlers are installed)."""
        self._begin()
        self._thread = threading.Thread(target=self._thread_main, name="sockit-server")
        self._thread.start()

    def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop accepting at once, let handlers finish for ``drain_timeout`` seconds
        (default: the server's), then abort the rest with an RST; wait for all of it.

        Idempotent; a later call with ``drain_timeout=0`` turns a drain in progress
        into an abort. A server that was never started just closes its listener. From
        inside a handler it only requests the shutdown. Re-raises the error that
        stopped a server run by :meth:`start`.
        """
        if drain_timeout is None:
            drain_timeout = self._config.drain_timeout
        elif drain_timeout < 0 or math.isnan(drain_timeout):
            raise ValueError(f"drain_timeout must be >= 0, not {drain_timeout!r}")
        with self._state_lock:
            if self._state == _READY:
                self._state = _CLOSED
                self._release()
                self._finished.set()
                return
            if not self._stop_requested:
                self._stop_drain = drain_timeout
                self._stop_requested = True
            elif drain_timeout == 0:
                self._abort_requested = True
            runner = self._runner
        if runner is not None:
            # At once, in this thread: the control loop may be slow to wake up.
            runner.stop_accepting()
        self._control_waker.poke()
        if in_handler():
            return
        self._finished.wait()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        error, self._thread_error = self._thread_error, None
        if error is not None:
            raise error

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    # --- internals ---------------------------------------------------------------

    def _begin(self) -> None:
        with self._state_lock:
            if self._state != _READY:
                raise RuntimeError(f"this server was already started ({self._state})")
            self._runner = self._make_runner()
            self._state = _RUNNING

    def _make_runner(self) -> ModeRunner:
        config = self._config
        if self._shared is not None:
            return WorkersRunner(
                count=config.workers,
                listener=self._listener,
                logger=config.logger,
                shared=self._shared,
                run_worker=self._run_worker,
            )
        context = ServeContext(
            mode=config.mode,
            handler=config.handler,
            listener=self._listener,
            socket_factory=config.socket_factory,
            logger=config.logger,
            counters=self._counters,
            max_connections=config.max_connections,
            idle_timeout=config.idle_timeout,
            access_policy=config.access_policy,
            proxy_protocol=config.proxy_protocol,
            listener_shared=self._worker or not config.owns_listener,
        )
        return _mode_factory(config.mode)(context)

    def _run_worker(self, counters: Counters) -> None:
        """Serve in a worker process (its main thread) until told to stop."""
        # Not the parent's listener object: closing this one closes this process's
        # fds only, and never removes the parent's UNIX socket file.
        factory = self._config.socket_factory
        listener = SocketListener(self._listener.sockets, socket_factory=factory)
        worker = Server(self._config, listener, worker=True, counters=counters)
        worker.serve_forever()

    def _thread_main(self) -> None:
        try:
            self._serve_forever()
        except BaseException as error:  # noqa: BLE001 - handed to shutdown(), which re-raises it
            self._thread_error = error

    def _serve_forever(self) -> None:
        restore: Callable[[], None] | None = None
        try:
            if threading.current_thread() is threading.main_thread():
                restore = self._install_signal_handlers()
            self._control()
        finally:
            if restore is not None:
                restore()
            with self._state_lock:
                self._state = _CLOSED
                self._release()
            self._finished.set()
        error = self._serve_error
        if error is not None:
            raise error

    def _install_signal_handlers(self) -> Callable[[], None]:
        ignore: Iterable[signal.Signals] = ()
        handled: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
        if self._worker:
            handled, ignore = (signal.SIGTERM,), (signal.SIGINT,)
        return install_shutdown_handlers(
            self._on_signal, handled, ignore=ignore, wakeup_fd=self._control_waker.write_fileno()
        )

    def _on_signal(self, signum: int) -> None:
        # In a signal handler: no locks, no logging (see _signals.py). The control loop
        # logs and acts after the poke wakes it.
        # (signal, whether it aborts): a signal after any stop request aborts.
        self._signals.append((signum, self._stop_requested))
        if self._stop_requested:
            self._abort_requested = True
        else:
            self._stop_drain = self._config.drain_timeout
            self._stop_requested = True
        self._control_waker.poke()

    def _release(self) -> None:
        """Close what the server itself holds (called with the state lock)."""
        self._control_waker.close()
        self._listener.close()

    def _control(self) -> None:
        runner = self._runner
        if runner is None:  # pragma: no cover (set by _begin)
            raise RuntimeError("server not started")
        serving = threading.Thread(target=self._serving_main, args=(runner,), name="sockit-accept")
        serving.start()
        logger = self._config.logger
        if self._worker:
            how = f", worker pid {os.getpid()}"
        else:
            how = f", workers={self.workers}" if self.workers > 1 else ""
        logger.info(
            "serving on %s (mode=%s%s)", ", ".join(map(str, self._addresses)), self.mode, how
        )
        try:
            self._control_loop(runner)
        except BaseException:
            runner.stop_accepting()
            runner.abort()
            raise
        finally:
            if self._serving_done:
                serving.join()

    def _control_loop(self, runner: ModeRunner) -> None:
        logger = self._config.logger
        stopping = aborting = False
        drain_deadline = abort_deadline = math.inf
        # Bounded: after a stop request every round moves toward a deadline (the drain,
        # then the abort grace), and each round waits for a wake-up or that deadline.
        while not self._serving_done:
            self._log_signals()
            now = time.monotonic()
            if not stopping and (self._stop_requested or self._accepting_stopped):
                stopping = True
                runner.stop_accepting()
                drain = self._stop_drain if self._stop_requested else self._config.drain_timeout
                if self._shared is not None and drain > 0:
                    drain += WORKER_DRAIN_MARGIN
                drain_deadline = now + drain
                logger.info(
                    "stopped accepting; waiting up to %.1f s for %d connection(s)",
                    drain,
                    self.active_connections,
                )
            if stopping and not aborting and (self._abort_requested or now >= drain_deadline):
                aborting = True
                active = self.active_connections
                logger.log(
                    logging.WARNING if active else logging.DEBUG,
                    "aborting %d connection(s)",
                    active,
                )
                runner.abort()
                abort_deadline = time.monotonic() + ABORT_GRACE
            if aborting and time.monotonic() >= abort_deadline:
                logger.error(
                    "%d connection(s) still running %.1f s after the abort; giving up on them",
                    self.active_connections,
                    ABORT_GRACE,
                )
                return
            deadline = abort_deadline if aborting else drain_deadline
            self._wait_for_wakeup(None if math.isinf(deadline) else deadline - time.monotonic())

    def _wait_for_wakeup(self, timeout: float | None) -> None:
        poller = select.poll()
        poller.register(self._control_waker.socket, select.POLLIN)
        # A signal interrupts poll; PEP 475 retries it, and the handler's poke makes
        # the retry return at once.
        poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        self._control_waker.drain()

    def _log_signals(self) -> None:
        logger = self._config.logger
        while self._signals:
            signum, aborts = self._signals.pop(0)
            if aborts:
                logger.warning("received %s again: aborting every connection", signal_name(signum))
            else:
                logger.info(
                    "received %s: draining connections (send it again to abort)",
                    signal_name(signum),
                )

    def _serving_main(self, runner: ModeRunner) -> None:
        try:
            try:
                runner.serve()
            except BaseException as error:  # noqa: BLE001 - serve_forever re-raises it
                self._serve_error = error
                # No traceback here: serve_forever() raises the error itself.
                self._config.logger.error("accepting failed, the server stops: %r", error)  # noqa: TRY400
            finally:
                self._accepting_stopped = True
                self._control_waker.poke()
            runner.wait_closed()
        except BaseException as error:
            self._config.logger.exception("the server failed while closing")
            if self._serve_error is None:
                self._serve_error = error
        finally:
            self._serving_done = True
            self._control_waker.poke()


@overload
def serve(
    handler: Callable[[SocketStream], object],
    port: int | str = 0,
    host: str | None = None,
    *,
    mode: Literal["sequential", "thread", "fork"] = "thread",
    workers: int = 1,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    allow: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
    proxy_protocol: bool = False,
    backlog: int | None = None,
    listener: SocketListener | None = None,
    logger: logging.Logger | None = None,
    socket_factory: SocketFactory | None = None,
) -> Server: ...


@overload
def serve(
    handler: Callable[[Any], Awaitable[object]],
    port: int | str = 0,
    host: str | None = None,
    *,
    mode: Literal["async"],
    workers: int = 1,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    allow: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
    proxy_protocol: bool = False,
    backlog: int | None = None,
    listener: SocketListener | None = None,
    logger: logging.Logger | None = None,
    socket_factory: SocketFactory | None = None,
) -> Server: ...


def serve(
    handler: Callable[[Any], object],
    port: int | str = 0,
    host: str | None = None,
    *,
    mode: Mode = "thread",
    workers: int = 1,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    allow: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
    proxy_protocol: bool = False,
    backlog: int | None = None,
    listener: SocketListener | None = None,
    logger: logging.Logger | None = None,
    socket_factory: SocketFactory | None = None,
) -> Server:
    """Bind and listen, and return a :class:`Server` ready to ``serve_forever()``.

    ``handler(stream)`` is called once per connection with a
    :class:`~sockit.SocketStream` (``mode="async"``: awaited with an
    ``AsyncSocketStream``); the server closes the stream when it returns or raises.
    Without ``host`` the server listens on IPv4 and IPv6 (see :func:`sockit.listen`);
    ``backlog`` defaults to the system maximum.

    * ``mode``: ``"sequential"`` (one connection at a time, in the serving thread),
      ``"thread"`` (a thread per connection), ``"fork"`` (a child process per
      connection), ``"async"`` (tasks on an event loop).
    * ``workers``: N > 1 runs N processes of ``mode`` on the same listening socket,
      supervised (a crashed worker is restarted).
    * ``max_connections``: connections over it are accepted and closed at once, counted
      in ``stats.refused`` (per worker process with ``workers``).
    * ``idle_timeout``: the stream's default ``timeout``: a receive or send that waits
      longer raises ``TimeoutError`` in the handler, which (unless the handler catches
      it) ends the connection. ``None``: no limit.
    * ``drain_timeout``: seconds handlers get to finish on shutdown before the abort.
    * ``allow``/``deny``: addresses or CIDR networks (:class:`~sockit.proto.access.AccessPolicy`);
      a refused peer is closed at once and logged at debug level. UNIX peers have no
      address and are not filtered. With ``proxy_protocol`` the policy applies to the
      connecting proxy, not to the client the header names (which anyone could claim).
    * ``proxy_protocol``: read a PROXY v1/v2 header before the handler runs; the
      stream's ``remote_address``/``local_address`` become the original ones.
    * ``listener``: serve an existing :class:`~sockit.SocketListener` (UNIX, socket
      activation) instead of binding; the server takes it over and closes it.
    * ``logger``: where the server logs (default: ``logging.getLogger("sockit.serve")``).
    * ``socket_factory``: sockets and waits come from it (tests inject accept errors).

    Raises ``ValueError`` for a bad argument (before binding), ``OSError`` if binding
    fails (nothing stays open).
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {type(handler).__name__}")
    _check_mode(mode, workers)
    if isinstance(max_connections, bool) or max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, not {max_connections!r}")
    if idle_timeout is not None and not idle_timeout > 0:
        raise ValueError(f"idle_timeout must be > 0 or None, not {idle_timeout!r}")
    if not drain_timeout >= 0:
        raise ValueError(f"drain_timeout must be >= 0, not {drain_timeout!r}")
    policy = None if allow is None and deny is None else AccessPolicy(allow, deny)
    factory = socket_factory or SYSTEM_SOCKET_FACTORY
    owns_listener = listener is None
    if listener is None:
        listener = listen(port, host, backlog=backlog, socket_factory=factory)
    elif port not in (0, "0") or host is not None or backlog is not None:
        raise ValueError("pass either listener= or port/host/backlog, not both")
    config = _Config(
        handler=handler,
        mode=mode,
        workers=workers,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        drain_timeout=float(drain_timeout),
        access_policy=policy,
        proxy_protocol=proxy_protocol,
        logger=logger or logging.getLogger("sockit.serve"),
        socket_factory=factory,
        owns_listener=owns_listener,
    )
    try:
        return Server(config, listener)
    except BaseException:
        listener.close()
        raise


def _check_mode(mode: str, workers: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; not {mode!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, not {workers!r}")
    if (mode == "fork" or workers > 1) and not hasattr(os, "fork"):
        raise ValueError("fork mode and workers need os.fork (POSIX)")
    _mode_factory(mode)  # the async mode may be missing from this build
