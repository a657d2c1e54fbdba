"""SocketAddress and AddrInfo: conversion from kernel sockaddrs and printing."""

from __future__ import annotations

import socket
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from sockit.addr import AddrInfo, SocketAddress, format_host_port

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("127.0.0.1", 80, "127.0.0.1:80"),
        ("::1", 80, "[::1]:80"),
        ("fe80::1%lo", 22, "[fe80::1%lo]:22"),
        ("example.com", 443, "example.com:443"),
    ],
)
def test_format_host_port(host: str, port: int, text: str) -> None:
    assert format_host_port(host, port) == text


@pytest.mark.parametrize(
    ("family", "sockaddr", "expected", "text"),
    [
        (
            socket.AF_INET,
            ("192.0.2.1", 80),
            SocketAddress(socket.AF_INET, "192.0.2.1", 80),
            "192.0.2.1:80",
        ),
        (
            socket.AF_INET6,
            ("2001:db8::1", 443, 0, 0),
            SocketAddress(socket.AF_INET6, "2001:db8::1", 443),
            "[2001:db8::1]:443",
        ),
        (
            socket.AF_INET6,
            ("::ffff:192.0.2.1", 80, 0, 0),
            SocketAddress(socket.AF_INET, "192.0.2.1", 80),
            "192.0.2.1:80",
        ),
    ],
)
def test_addrinfo_address(
    family: socket.AddressFamily,
    sockaddr: tuple[Any, ...],
    expected: SocketAddress,
    text: str,
) -> None:
    info = AddrInfo(family, socket.SOCK_STREAM, 6, "", sockaddr)
    assert info.address == expected
    assert str(info.address) == text


def test_addrinfo_is_the_getaddrinfo_tuple() -> None:
    [raw] = socket.getaddrinfo(
        "127.0.0.1", 80, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
    )
    info = AddrInfo(*raw)
    assert tuple(info) == raw
    assert info.family == socket.AF_INET
    assert info.type == socket.SOCK_STREAM
    assert info.sockaddr == ("127.0.0.1", 80)
    assert info.address.to_sockaddr() == info.sockaddr


def test_address_of_a_real_tcp_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            server_side, peer = listener.accept()
            with server_side:
                local = SocketAddress.from_sockaddr(client.family, client.getsockname())
                remote = SocketAddress.from_sockaddr(server_side.family, peer)
                assert local == remote
                assert str(
                    SocketAddress.from_sockaddr(listener.family, listener.getsockname())
                ) == (f"127.0.0.1:{port}")


def test_unix_addresses(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        address = SocketAddress.from_sockaddr(socket.AF_UNIX, listener.getsockname())
        assert address == SocketAddress(socket.AF_UNIX, path=path)
        assert str(address) == f"unix:{path}"
        assert address.is_unix
        assert not address.is_abstract
    assert str(SocketAddress(socket.AF_UNIX, path="")) == "unix:(unnamed)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux abstract namespace")
def test_abstract_unix_address() -> None:
    name = f"@sockit-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(SocketAddress(socket.AF_UNIX, path=name).to_sockaddr())
        address = SocketAddress.from_sockaddr(socket.AF_UNIX, listener.getsockname())
        assert address.path == name
        assert address.is_abstract
        assert str(address) == name
