"""parse_port: range checks before any lookup, service names, type errors."""

from __future__ import annotations

import socket

import pytest

from sockit.addr import parse_port
from sockit.errors import AddressError


@pytest.fixture
def no_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any name or service lookup fail the test, and record attempts."""
    attempts: list[str] = []

    def forbidden(*args: object, **kwargs: object) -> object:
        attempts.append(repr(args))
        raise AssertionError(f"unexpected lookup {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "getservbyname", forbidden)
    return attempts


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (0, 0),
        (1, 1),
        (80, 80),
        (65535, 65535),
        ("0", 0),
        ("8080", 8080),
        ("65535", 65535),
        ("080", 80),  # leading zeros are decimal, as glibc reads them
    ],
)
def test_numbers_in_range_are_accepted_without_lookup(
    port: int | str, expected: int, no_lookups: list[str]
) -> None:
    assert parse_port(port) == expected
    assert no_lookups == []


@pytest.mark.parametrize(
    "port", [65536, -1, 99999, 2**64, "65536", "-1", "99999", "+80", "-0", "1" * 100]
)
def test_out_of_range_is_rejected_before_any_lookup(port: int | str, no_lookups: list[str]) -> None:
    with pytest.raises(AddressError, match=r"a port is a number 0-65535") as info:
        parse_port(port)
    assert repr(port) in str(info.value)
    assert no_lookups == []


@pytest.mark.parametrize(
    "port", ["", " 80", "80 ", "8 0", "http\0", "\u0663", "\u00b2", "ü", "-http", "a b", "x" * 64]
)
def test_garbage_is_rejected_before_any_lookup(port: str, no_lookups: list[str]) -> None:
    with pytest.raises(AddressError, match=r"invalid port"):
        parse_port(port)
    assert no_lookups == []


@pytest.mark.parametrize("port", [True, False, 80.0, None, b"80"])
def test_non_int_non_str_is_a_type_error(port: object) -> None:
    with pytest.raises(TypeError, match=r"port must be an int or a str"):
        parse_port(port)  # type: ignore[arg-type]


def test_unknown_protocol_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"protocol must be 'tcp' or 'udp'"):
        parse_port(80, protocol="sctp")


def test_service_name_is_looked_up_for_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def fake_getservbyname(name: str, protocol: str) -> int:
        calls.append((name, protocol))
        return 5353

    monkeypatch.setattr(socket, "getservbyname", fake_getservbyname)
    assert parse_port("mdns", protocol="udp") == 5353
    assert calls == [("mdns", "udp")]


def test_unknown_service_name_is_an_address_error_chaining_the_os_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_getservbyname(name: str, protocol: str) -> int:
        raise OSError("service/proto not found")

    monkeypatch.setattr(socket, "getservbyname", fake_getservbyname)
    with pytest.raises(AddressError, match=r"unknown tcp service name") as info:
        parse_port("no-such-service")
    assert isinstance(info.value.__cause__, OSError)
    assert "'no-such-service'" in str(info.value)


def test_real_service_names_from_the_services_table() -> None:
    try:
        expected = socket.getservbyname("http", "tcp")
    except OSError:
        pytest.skip("this system has no services(5) table")
    assert parse_port("http") == expected == 80
    with pytest.raises(AddressError, match=r"unknown tcp service name"):
        parse_port("sockit-no-such-service")
