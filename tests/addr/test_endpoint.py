"""parse_endpoint, InetEndpoint, UnixEndpoint: forms, errors, formatting, real binds."""

from __future__ import annotations

import socket
import sys
import uuid
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.addr import InetEndpoint, UnixEndpoint, parse_endpoint
from sockit.errors import AddressError, ResolutionError

if TYPE_CHECKING:
    from pathlib import Path

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract UNIX names are Linux-only"
)


@pytest.fixture
def no_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def forbidden(*args: object, **kwargs: object) -> object:
        attempts.append(repr(args))
        raise AssertionError(f"unexpected lookup {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "getservbyname", forbidden)
    return attempts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com:80", InetEndpoint("example.com", 80)),
        ("127.0.0.1:8080", InetEndpoint("127.0.0.1", 8080)),
        ("[::1]:443", InetEndpoint("::1", 443)),
        ("[fe80::1%lo]:22", InetEndpoint("fe80::1%lo", 22)),
        ("[FE80:0::1%eth0]:22", InetEndpoint("fe80::1%eth0", 22)),
        ("bücher.example:80", InetEndpoint("xn--bcher-kva.example", 80)),
        ("example.com.:80", InetEndpoint("example.com.", 80)),
        (":8080", InetEndpoint(None, 8080)),
        ("8080", InetEndpoint(None, 8080)),
        ("0", InetEndpoint(None, 0)),
        ("localhost:0", InetEndpoint("localhost", 0)),
        ("unix:/run/x.sock", UnixEndpoint("/run/x.sock")),
        ("unix:relative.sock", UnixEndpoint("relative.sock")),
        ("/tmp/x.sock", UnixEndpoint("/tmp/x.sock")),
    ],
)
def test_forms(text: str, expected: InetEndpoint | UnixEndpoint, no_lookups: list[str]) -> None:
    assert parse_endpoint(text) == expected
    assert no_lookups == []


@linux_only
@pytest.mark.parametrize("text", ["@sockit-test", "unix:@sockit-test"])
def test_abstract_names(text: str) -> None:
    endpoint = parse_endpoint(text)
    assert endpoint == UnixEndpoint("@sockit-test")
    assert isinstance(endpoint, UnixEndpoint)
    assert endpoint.is_abstract
    assert str(endpoint) == "@sockit-test"


@pytest.mark.parametrize(
    ("text", "default_port", "expected"),
    [
        ("example.com", 80, InetEndpoint("example.com", 80)),
        ("example.com:", 80, InetEndpoint("example.com", 80)),
        ("[::1]", 80, InetEndpoint("::1", 80)),
        ("[::1]:", 80, InetEndpoint("::1", 80)),
        ("::1", 80, InetEndpoint("::1", 80)),  # a bare IPv6 needs the default port
        ("fe80::1:80", 22, InetEndpoint("fe80::1:80", 22)),  # the whole text is the host
        ("example.com:81", 80, InetEndpoint("example.com", 81)),
    ],
)
def test_default_port(text: str, default_port: int, expected: InetEndpoint) -> None:
    assert parse_endpoint(text, default_port=default_port) == expected


def test_service_names_are_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getservbyname", lambda name, protocol: {"http": 80}[name])
    assert parse_endpoint("example.com:http") == InetEndpoint("example.com", 80)
    assert parse_endpoint("[::1]:http") == InetEndpoint("::1", 80)


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("localhost:65536", "invalid port '65536'"),
        ("localhost:-1", "invalid port '-1'"),
        ("localhost:99999", "invalid port '99999'"),
        ("[::1]:99999", "invalid port '99999'"),
        ("99999", "invalid port '99999'"),
        ("-1", "invalid port '-1'"),
        (":65536", "invalid port '65536'"),
        ("localhost:8 0", "invalid port '8 0'"),
        ("localhost", "no port given"),
        ("[::1]", "no port given"),
        ("::1", "needs brackets"),
        ("::1:80", "needs brackets"),
        ("[::1", "missing ']'"),
        ("[::1]80", "expected ':port' after ']'"),
        ("[127.0.0.1]:80", "brackets are only for IPv6"),
        ("127.1:80", "four decimal numbers"),
        ("010.1.1.1:80", "four decimal numbers"),
        ("2130706433:80", "four decimal numbers"),
        ("[::1%]:80", "bad IPv6 scope"),
        ("user@host:80", "cannot appear in a host name"),
        ("", "empty endpoint"),
        (" localhost:80", "white space"),
        ("localhost:80\n", "white space"),
        ("unix:", "empty UNIX socket path"),
        ("@", "empty abstract"),
        ("unix:/a\0b", "NUL"),
    ],
)
def test_errors_name_the_endpoint_and_the_bad_part(
    text: str, bad_part: str, no_lookups: list[str]
) -> None:
    if text == "@" and not sys.platform.startswith("linux"):
        bad_part = "only on Linux"
    with pytest.raises(AddressError) as info:
        parse_endpoint(text)
    message = str(info.value)
    assert message.startswith(f"invalid endpoint {text!r}: ")
    assert bad_part in message
    assert no_lookups == []


def test_impossible_host_names_stay_resolution_errors() -> None:
    host = "a" * 300
    with pytest.raises(ResolutionError, match=r"limit is 253") as info:
        parse_endpoint(f"{host}:80")
    assert isinstance(info.value, OSError)
    assert info.value.host == host


def test_non_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"endpoint must be a str"):
        parse_endpoint(b"localhost:80")  # type: ignore[arg-type]


def test_unix_path_length_follows_sun_path() -> None:
    limit = 107 if sys.platform.startswith("linux") else 103
    assert UnixEndpoint("/" + "a" * (limit - 1)).path == "/" + "a" * (limit - 1)
    with pytest.raises(AddressError, match=r"sun_path"):
        UnixEndpoint("/" + "a" * limit)
    # The limit is in bytes: a two-byte character counts twice.
    with pytest.raises(AddressError, match=r"sun_path"):
        UnixEndpoint("/" + "é" * (limit // 2 + 1))


def test_inet_endpoint_checks_its_fields() -> None:
    assert InetEndpoint("BÜCHER.example", 80).host == "xn--bcher-kva.example"
    assert InetEndpoint("[::1]", 80) == InetEndpoint("::1", 80)
    with pytest.raises(AddressError, match=r"a port is a number 0-65535"):
        InetEndpoint("localhost", 65536)
    with pytest.raises(TypeError, match=r"port must be an int"):
        InetEndpoint("localhost", True)
    with pytest.raises(TypeError, match=r"port must be an int"):
        InetEndpoint("localhost", "80")  # type: ignore[arg-type]
    with pytest.raises(AddressError, match=r"four decimal numbers"):
        InetEndpoint("127.1", 80)
    with pytest.raises(TypeError, match=r"UNIX socket path must be a str"):
        UnixEndpoint(b"/tmp/x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [
        (InetEndpoint("example.com", 80), "example.com:80"),
        (InetEndpoint("127.0.0.1", 0), "127.0.0.1:0"),
        (InetEndpoint("::1", 443), "[::1]:443"),
        (InetEndpoint("fe80::1%lo", 22), "[fe80::1%lo]:22"),
        (InetEndpoint(None, 8080), ":8080"),
        (UnixEndpoint("/run/x.sock"), "unix:/run/x.sock"),
        (UnixEndpoint("x.sock"), "unix:x.sock"),
    ],
)
def test_str_reads_back(endpoint: InetEndpoint | UnixEndpoint, text: str) -> None:
    assert str(endpoint) == text
    assert parse_endpoint(text) == endpoint


def test_parsed_inet_endpoint_binds_and_connects_over_loopback() -> None:
    endpoint = parse_endpoint("127.0.0.1:0")
    assert isinstance(endpoint, InetEndpoint)
    assert endpoint.host is not None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((endpoint.host, endpoint.port))
        listener.listen(1)
        port = listener.getsockname()[1]
        target = parse_endpoint(f"{endpoint.host}:{port}")
        assert isinstance(target, InetEndpoint)
        assert target.host is not None
        with socket.create_connection((target.host, target.port), timeout=5) as client:
            server_side, peer = listener.accept()
            with server_side:
                assert peer == client.getsockname()


def test_parsed_ipv6_endpoint_binds_over_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    endpoint = parse_endpoint("[::1]:0")
    assert isinstance(endpoint, InetEndpoint)
    assert endpoint.host is not None
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        try:
            listener.bind((endpoint.host, endpoint.port))
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        assert listener.getsockname()[0] == "::1"


def test_parsed_unix_endpoint_binds_and_connects(tmp_path: Path) -> None:
    endpoint = parse_endpoint(f"unix:{tmp_path / 's.sock'}")
    assert isinstance(endpoint, UnixEndpoint)
    _bind_connect_unix(endpoint)


@linux_only
def test_parsed_abstract_endpoint_binds_and_connects() -> None:
    endpoint = parse_endpoint(f"@sockit-test-{uuid.uuid4().hex}")
    assert isinstance(endpoint, UnixEndpoint)
    _bind_connect_unix(endpoint)


def _bind_connect_unix(endpoint: UnixEndpoint) -> None:
    sockaddr = endpoint.address.to_sockaddr()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(sockaddr)
        listener.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(sockaddr)
            server_side, _ = listener.accept()
            with server_side:
                client.sendall(b"ping")
                assert server_side.recv(4) == b"ping"
        assert str(endpoint.address) == str(endpoint)


# Round trip: str(endpoint) reads back to an equal endpoint, for every valid inet form.
_label = st.from_regex(r"[a-z0-9_]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_name = (
    st.lists(_label, min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda n: not n.rsplit(".", 1)[-1].isdigit())
)
_hosts = st.one_of(
    st.none(),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
    st.tuples(st.ip_addresses(v=6).map(str), st.sampled_from(["lo", "eth0", "2"])).map("%".join),
    _name,
    _name.map(lambda n: n + "."),
    st.sampled_from(["bücher.example", "faß.de", "例え.テスト"]),
)
_ports = st.integers(min_value=0, max_value=65535)


@settings(database=None)
@given(_hosts, _ports)
def test_inet_endpoint_round_trip(host: str | None, port: int) -> None:
    endpoint = InetEndpoint(host, port)
    text = str(endpoint)
    assert parse_endpoint(text) == endpoint
    assert str(parse_endpoint(text)) == text


@settings(database=None)
@given(_hosts, _ports)
def test_format_of_parse_is_stable(host: str | None, port: int) -> None:
    if host is None:
        text = f":{port}"
    elif ":" in host:
        text = f"[{host}]:{port}"
    else:
        text = f"{host}:{port}"
    once = str(parse_endpoint(text))
    assert str(parse_endpoint(once)) == once
