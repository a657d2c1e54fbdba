"""order_addresses: RFC 8305 section 4 interleaving, as a table."""

from __future__ import annotations

import socket

import pytest

from sockit.addr import AddrInfo, order_addresses


def info(name: str) -> AddrInfo:
    """``"6a"`` is an IPv6 answer, ``"4b"`` an IPv4 one; the letter tells them apart."""
    index = ord(name[1]) - ord("a") + 1
    if name[0] == "6":
        return AddrInfo(
            socket.AF_INET6, socket.SOCK_STREAM, 6, "", (f"2001:db8::{index}", 80, 0, 0)
        )
    return AddrInfo(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{index}", 80))


def infos(names: str) -> list[AddrInfo]:
    return [info(name) for name in names.split()]


@pytest.mark.parametrize(
    ("answers", "count", "expected"),
    [
        pytest.param("", 1, "", id="empty"),
        pytest.param("6a", 1, "6a", id="one"),
        pytest.param("6a 6b 6c", 1, "6a 6b 6c", id="only-v6"),
        pytest.param("4a 4b 4c", 1, "4a 4b 4c", id="only-v4"),
        pytest.param("6a 6b 4a 4b", 1, "6a 4a 6b 4b", id="v6-first"),
        pytest.param("4a 4b 6a 6b", 1, "4a 6a 4b 6b", id="v4-first"),
        pytest.param("6a 4a 6b 4b", 1, "6a 4a 6b 4b", id="already-interleaved"),
        pytest.param("6a 6b 6c 4a", 1, "6a 4a 6b 6c", id="v4-runs-out"),
        pytest.param("6a 4a 4b 4c", 1, "6a 4a 4b 4c", id="v6-runs-out"),
        # The example of RFC 8305 section 4 with a First Address Family Count of 2.
        pytest.param("6a 6b 6c 4a 4b", 2, "6a 6b 4a 6c 4b", id="count-2-rfc-example"),
        pytest.param("4a 4b 4c 6a 6b", 2, "4a 4b 6a 4c 6b", id="count-2-v4-first"),
        pytest.param("6a 4a", 2, "6a 4a", id="count-larger-than-family"),
        pytest.param("6a 6b 4a", 5, "6a 6b 4a", id="count-larger-than-everything"),
        pytest.param("4a 6a 6b 6c", 1, "4a 6a 6b 6c", id="preferred-runs-out-first"),
        pytest.param("6a 6a 4a 4a", 1, "6a 4a 6a 4a", id="duplicates-kept-in-order"),
        pytest.param("6b 6a 4b 4a", 1, "6b 4b 6a 4a", id="resolver-order-kept"),
        pytest.param("4a 6a 4b 4c 6b", 1, "4a 6a 4b 6b 4c", id="mixed-input"),
    ],
)
def test_rfc_8305_order(answers: str, count: int, expected: str) -> None:
    given = infos(answers)
    before = list(given)
    assert order_addresses(given, first_address_family_count=count) == infos(expected)
    assert given == before  # the input is not modified


def test_duplicates_are_the_same_objects_in_resolver_order() -> None:
    first, second = info("6a"), info("6a")
    ordered = order_addresses([first, info("6b"), second, info("4a")])
    assert ordered[0] is first
    assert ordered[3] is second


def test_more_than_two_families_round_robin() -> None:
    unix = AddrInfo(socket.AF_UNIX, socket.SOCK_STREAM, 0, "", ("/x",))
    answers = [info("6a"), info("6b"), info("4a"), info("4b"), unix]
    assert order_addresses(answers) == [info("6a"), info("4a"), unix, info("6b"), info("4b")]


def test_default_count_is_one() -> None:
    assert order_addresses(infos("6a 6b 4a")) == infos("6a 4a 6b")


@pytest.mark.parametrize("count", [0, -1])
def test_count_below_one_is_rejected(count: int) -> None:
    with pytest.raises(ValueError, match=r"first_address_family_count must be at least 1"):
        order_addresses(infos("6a 4a"), first_address_family_count=count)


def test_accepts_any_sequence() -> None:
    assert order_addresses(tuple(infos("4a 4b 6a"))) == infos("4a 6a 4b")
