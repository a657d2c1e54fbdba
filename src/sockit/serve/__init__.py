"""L3 servers: a listener, a handler and a concurrency model.

``sockit.serve(handler, port)`` (this package is callable: calling it is
:func:`sockit.serve.server.serve`) returns a bound :class:`Server`; ``serve_forever()``
runs it in the sequential, thread, fork or async mode, optionally in N supervised worker
processes. The contracts (handler failures end one connection, accept errors are
survived, graceful then forced shutdown, no zombies, no leaked fds) are in
:mod:`sockit.serve.server`. Also here: the built-in services
(:mod:`~sockit.serve.services`), exec per connection (:mod:`~sockit.serve.exec`), the
UDP server (:func:`serve_udp`) and socket activation (:mod:`~sockit.serve.activation`).

Must never import ``sockit.relay``, ``sockit.testing`` or ``sockit.cli`` (layers above).
"""

import sys
import types
from typing import Any

from sockit.serve.exec import (
    AsyncExecHandler,
    ExecHandler,
    async_exec_handler,
    async_sh_exec_handler,
    connection_environment,
    exec_handler,
    sh_exec_handler,
)
from sockit.serve.server import (
    MODES,
    ModeFactory,
    ModeRunner,
    ServeContext,
    Server,
    ServerStats,
    serve,
)
from sockit.serve.services import SERVICES, Service
from sockit.serve.udp import DatagramHandler, UDPServer, UDPServerStats, serve_udp

__all__ = [
    "MODES",
    "SERVICES",
    "AsyncExecHandler",
    "DatagramHandler",
    "ExecHandler",
    "ModeFactory",
    "ModeRunner",
    "ServeContext",
    "Server",
    "ServerStats",
    "Service",
    "UDPServer",
    "UDPServerStats",
    "async_exec_handler",
    "async_sh_exec_handler",
    "connection_environment",
    "exec_handler",
    "serve",
    "serve_udp",
    "sh_exec_handler",
]


class _CallableModule(types.ModuleType):
    """Makes ``sockit.serve(handler, port)`` work although ``sockit.serve`` is this
    package: importing a submodule (``sockit.serve.server``) binds the package, not a
    function, to ``sockit.serve``, so the package itself forwards calls to
    :func:`serve` (DESIGN.md's spelling). ``from sockit.serve import serve`` is the
    same function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return serve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
