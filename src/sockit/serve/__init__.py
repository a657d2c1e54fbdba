"""L3 servers: a listener, a handler and a concurrency model.

``serve(handler, port)`` returns a bound :class:`Server`; ``serve_forever()`` runs it
in the sequential, thread, fork or async mode, optionally in N supervised worker
processes. The contracts (handler failures end one connection, accept errors are
survived, graceful then forced shutdown, no zombies, no leaked fds) are in
:mod:`sockit.serve.server`.

Must never import ``sockit.relay``, ``sockit.testing`` or ``sockit.cli`` (layers above).
"""

from sockit.serve.server import (
    MODES,
    ModeFactory,
    ModeRunner,
    ServeContext,
    Server,
    ServerStats,
    serve,
)

__all__ = [
    "MODES",
    "ModeFactory",
    "ModeRunner",
    "ServeContext",
    "Server",
    "ServerStats",
    "serve",
]
