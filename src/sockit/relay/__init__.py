"""L4 relay: the endpoint grammar and the full-duplex pump between any two endpoints.

``sockit.relay.run("tcp-listen:8080", "tcp:example.com:80")`` forwards every
connection on port 8080 to example.com:80 until interrupted;
``sockit.relay.run("-", "tcp:example.com:80")`` is netcat's connect mode. The grammar
is in :mod:`sockit.relay.grammar`, the pump (half-close, reset propagation, bounded
buffers, splice) in :mod:`sockit.relay.pump`, the relay's shapes (one-shot, listening)
in :mod:`sockit.relay.runner`, UDP sessions in :mod:`sockit.relay.udp`.

Importing this package loads only the grammar; the engine is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sockit.relay.grammar import EndpointOptions, EndpointSpec, parse_relay_endpoint

if TYPE_CHECKING:
    from sockit.relay.pump import PumpResult
    from sockit.relay.runner import Relay, RelayStats, arun, run

__all__ = [
    "EndpointOptions",
    "EndpointSpec",
    "PumpResult",
    "Relay",
    "RelayStats",
    "arun",
    "parse_relay_endpoint",
    "run",
]

_LAZY = {
    "PumpResult": "sockit.relay.pump",
    "Relay": "sockit.relay.runner",
    "RelayStats": "sockit.relay.runner",
    "arun": "sockit.relay.runner",
    "run": "sockit.relay.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
