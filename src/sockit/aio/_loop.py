"""Which event loop sockit.aio runs on: uvloop when installed, the stdlib loop otherwise.

uvloop is a default dependency on Linux (DESIGN.md: the async engine); it runs the same
protocols and transports as asyncio, only faster. The environment variable
``SOCKIT_LOOP`` overrides the choice:

* unset, empty or ``auto``: uvloop if it can be imported, else the stdlib loop;
* ``asyncio``: the stdlib selector loop, even when uvloop is installed (for debugging
  and for comparing the two);
* ``uvloop``: uvloop, and an ``ImportError`` if it is missing (no silent fallback when
  someone asked for it by name).

This module must never import uvloop at import time (``import sockit.aio`` stays cheap
and works without it) and must never install a global event loop policy: it only
creates loops.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

__all__ = ["LOOP_ENVIRONMENT_VARIABLE", "loop_name", "new_event_loop", "run"]

LOOP_ENVIRONMENT_VARIABLE = "SOCKIT_LOOP"
"""The environment variable that picks the loop: ``auto``, ``asyncio`` or ``uvloop``."""

_T = TypeVar("_T")

_AUTO = frozenset({"", "auto"})
_CHOICES = ("auto", "asyncio", "uvloop")


def _wanted() -> str:
    """The loop the environment asks for: ``"auto"``, ``"asyncio"`` or ``"uvloop"``."""
    value = os.environ.get(LOOP_ENVIRONMENT_VARIABLE, "").strip().lower()
    if value in _AUTO:
        return "auto"
    if value not in _CHOICES:
        raise ValueError(
            f"{LOOP_ENVIRONMENT_VARIABLE}={value!r} is not one of {', '.join(_CHOICES)}"
        )
    return value


def _uvloop_available() -> bool:
    # find_spec looks for the module without importing it (no libuv initialisation).
    return importlib.util.find_spec("uvloop") is not None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Create a new event loop of the kind ``SOCKIT_LOOP`` selects (see module docs).

    The caller owns the loop and must close it. Raises ``ImportError`` if
    ``SOCKIT_LOOP=uvloop`` and uvloop is not installed, ``ValueError`` for an unknown
    ``SOCKIT_LOOP`` value.
    """
    wanted = _wanted()
    if wanted == "uvloop" or (wanted == "auto" and _uvloop_available()):
        import uvloop  # noqa: PLC0415 - lazily: only when a loop is created

        return uvloop.new_event_loop()
    # The selector loop explicitly, not asyncio.new_event_loop(): that consults the
    # global policy, which a program may have switched to uvloop.
    return asyncio.SelectorEventLoop()


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"``: the kind of ``loop``.

    Without an argument: the running loop's kind, or, outside a running loop, the kind
    :func:`new_event_loop` would create now (without creating or importing anything).
    A loop of another library is named by its class (``"module.Class"``).
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            wanted = _wanted()
            if wanted == "auto":
                return "uvloop" if _uvloop_available() else "asyncio"
            return wanted
    module = type(loop).__module__
    if module.split(".")[0] == "uvloop":
        return "uvloop"
    if module.split(".")[0] == "asyncio":
        return "asyncio"
    return f"{module}.{type(loop).__qualname__}"


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run ``main`` to completion on a new loop from :func:`new_event_loop`; return its
    result. Like :func:`asyncio.run`: the loop is closed afterwards, remaining tasks are
    cancelled, async generators and the default executor are shut down, and Ctrl-C
    cancels ``main`` (when called from the main thread).

    Must not be called while a loop is running in this thread (``RuntimeError``).
    """
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
