"""connect(happy_eyeballs_delay=None) over real loopback sockets, sync and aio.

With no delay the attempts run one at a time, so while one is in flight there is no
next start to wake up for: the wait has no limit (the schedule says ``None``; the sync
connect once passed an infinite number of seconds to poll(2) and crashed with
OverflowError whenever more than one address was left).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sockit
from sockit import aio
from sockit.testing.fakes import FakeResolver

if TYPE_CHECKING:
    from collections.abc import Callable

PATIENCE = 5.0


def test_sync_sequential_connect_waits_without_limit_for_the_first_attempt() -> None:
    with sockit.listen(0, "127.0.0.1") as listener:
        resolver = FakeResolver({"two.test": ["127.0.0.1", "127.0.0.2"]})
        with sockit.connect(
            "two.test", listener.port, resolver=resolver, happy_eyeballs_delay=None
        ) as stream:
            assert str(stream.remote_address) == f"127.0.0.1:{listener.port}"
            with listener.accept(timeout=PATIENCE) as accepted:
                stream.sendall(b"ping")
                assert accepted.recv_exactly(4, timeout=PATIENCE) == b"ping"


def test_sync_sequential_connect_moves_on_after_a_refusal() -> None:
    with sockit.listen(0, "127.0.0.1") as listener:
        # Nobody listens on 127.0.0.2 at this port: refused, then the next address.
        resolver = FakeResolver({"two.test": ["127.0.0.2", "127.0.0.1"]})
        with sockit.connect(
            "two.test", listener.port, resolver=resolver, happy_eyeballs_delay=None
        ) as stream:
            assert str(stream.remote_address) == f"127.0.0.1:{listener.port}"
            listener.accept(timeout=PATIENCE).close()


def test_aio_sequential_connect_waits_without_limit_for_the_first_attempt(
    run: Callable[..., Any],
) -> None:
    async def main() -> None:
        listener = await aio.listen(0, "127.0.0.1")
        try:
            resolver = FakeResolver({"two.test": ["127.0.0.1", "127.0.0.2"]})
            stream = await aio.connect(
                "two.test", listener.port, resolver=resolver, happy_eyeballs_delay=None
            )
            try:
                assert str(stream.remote_address) == f"127.0.0.1:{listener.port}"
                accepted = await listener.accept(timeout=PATIENCE)
                await stream.sendall(b"ping")
                assert await accepted.recv_exactly(4, timeout=PATIENCE) == b"ping"
                await accepted.aclose()
            finally:
                await stream.aclose()
        finally:
            await listener.aclose()

    run(main)
