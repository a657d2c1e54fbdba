"""parse_local_address (sockit.addr.endpoint): connect()'s ``local_address`` argument,
shared by the sync and async connect."""

from __future__ import annotations

import socket

import pytest

from sockit.addr import SocketAddress, parse_local_address
from sockit.errors import AddressError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("192.0.2.1", SocketAddress(socket.AF_INET, "192.0.2.1", 0), id="v4"),
        pytest.param(
            ("192.0.2.1", 4000), SocketAddress(socket.AF_INET, "192.0.2.1", 4000), id="v4-port"
        ),
        pytest.param(("127.0.0.1", "80"), SocketAddress(socket.AF_INET, "127.0.0.1", 80), id="str"),
        pytest.param("::1", SocketAddress(socket.AF_INET6, "::1", 0), id="v6"),
        pytest.param(
            "2001:DB8:0:0::1", SocketAddress(socket.AF_INET6, "2001:db8::1", 0), id="v6-normalised"
        ),
        pytest.param(
            ("fe80::1%1", 5), SocketAddress(socket.AF_INET6, "fe80::1", 5, 1), id="v6-scope-index"
        ),
    ],
)
def test_literals(value: tuple[str, int] | str | None, expected: SocketAddress | None) -> None:
    assert parse_local_address(value) == expected


def test_a_scope_by_interface_name() -> None:
    name = socket.if_indextoname(1)
    local = parse_local_address(f"fe80::1%{name}")
    assert local is not None
    assert local.scope_id == 1


@pytest.mark.parametrize("value", ["localhost", "example.test", ("localhost", 80)])
def test_names_are_refused(value: tuple[str, int] | str) -> None:
    with pytest.raises(ValueError, match="local_address must be an IP address"):
        parse_local_address(value)


@pytest.mark.parametrize(
    "value", ["127.1", "010.0.0.1", ("127.0.0.1", 65536), ("127.0.0.1", -1), ("::1", "nope-x")]
)
def test_malformed_hosts_and_ports_are_address_errors(value: tuple[str, int] | str) -> None:
    with pytest.raises(AddressError):
        parse_local_address(value)


@pytest.mark.parametrize(
    ("value", "family"),
    [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6), ("::1", None)],
)
def test_an_agreeing_family(value: str, family: int | None) -> None:
    local = parse_local_address(value, family=family)
    assert local is not None


@pytest.mark.parametrize(
    ("value", "family"), [("127.0.0.1", socket.AF_INET6), ("::1", socket.AF_INET)]
)
def test_a_disagreeing_family_is_a_value_error(value: str, family: int) -> None:
    with pytest.raises(ValueError, match="local_address and family disagree"):
        parse_local_address(value, family=family)


def test_no_value_ignores_the_family() -> None:
    assert parse_local_address(None, family=socket.AF_INET6) is None
