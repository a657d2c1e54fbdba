"""RFC 8305 (Happy Eyeballs v2) section 4: the order in which to try resolved addresses.

A pure function: no I/O, no clock, no randomness. Connect code in sync/ and aio/ uses it
so that both try addresses in exactly the same order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sockit.addr._address import AddrInfo

__all__ = ["order_addresses"]


def order_addresses(
    infos: Sequence[AddrInfo], *, first_address_family_count: int = 1
) -> list[AddrInfo]:
    """Interleave address families as RFC 8305 section 4 describes.

    The family of the first answer is the preferred one (the resolver, following RFC
    6724 and the host's policy table, already put its choice first). Take
    ``first_address_family_count`` addresses of that family, then alternate one
    address of each family in turn; when a family runs out, the rest keep their order.
    Within a family the resolver's order is kept, and nothing is dropped or merged
    (duplicates stay where they are: removing them is not this function's job).

    RFC 8305 section 4 example, count 2, answers ``v6a v6b v6c v4a v4b``:
    ``v6a v6b v4a v6c v4b``. The RFC recommends a count of 1 by default (section 8).

    Returns a new list; ``infos`` is not modified.

    Raises:
        ValueError: ``first_address_family_count`` is less than 1.
    """
    if first_address_family_count < 1:
        raise ValueError(
            f"first_address_family_count must be at least 1, not {first_address_family_count}"
        )
    # Families in order of first appearance; more than two (unusual, but getaddrinfo
    # does not forbid it) are taken round-robin in that order.
    by_family: dict[int, deque[AddrInfo]] = {}
    for info in infos:
        by_family.setdefault(info.family, deque()).append(info)
    queues = list(by_family.values())
    if not queues:
        return []
    preferred = queues[0]
    head_start = min(first_address_family_count, len(preferred))
    ordered = [preferred.popleft() for _ in range(head_start)]
    # After the preferred family's head start, the next family goes first.
    turn = 1 % len(queues)
    while len(ordered) < len(infos):
        queue = queues[turn]
        if queue:
            ordered.append(queue.popleft())
        turn = (turn + 1) % len(queues)
    return ordered
