"""check_host: IP literal rules, name length limits, IDNA 2008, idempotence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.addr import check_host, is_ip_literal
from sockit.errors import AddressError, ResolutionError

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("10.20.30.40", "10.20.30.40"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("fe80::1%lo", "fe80::1%lo"),
        ("FE80:0::1%eth0", "fe80::1%eth0"),
        ("[fe80::1%2]", "fe80::1%2"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::FFFF:0102:0304", "::ffff:1.2.3.4"),
    ],
)
def test_ip_literals_are_normalised(host: str, expected: str) -> None:
    assert check_host(host) == expected
    assert is_ip_literal(expected)


@pytest.mark.parametrize(
    "host",
    [
        "010.1.1.1",  # octal to inet_aton: 8.1.1.1
        "0x7f.1",  # hex and two parts: 127.0.0.1
        "127.1",  # two parts: 127.0.0.1
        "2130706433",  # one 32-bit number: 127.0.0.1
        "0x7f000001",
        "0177.0.0.1",
        "127.0.0.01",
        "127.0.0.0x1",
        "1.2.3.4.",  # trailing dot: not a canonical dotted quad
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3",
        "example.123",  # WHATWG: a host ending in a number is an IPv4 attempt
        "foo.0x",
        "foo.0X1f",
    ],
)
def test_ipv4_shorthand_is_rejected(host: str) -> None:
    with pytest.raises(AddressError, match=r"four decimal numbers 0-255") as info:
        check_host(host)
    assert repr(host) in str(info.value)


@pytest.mark.parametrize(
    "host",
    [
        ":::1",
        "1::2::3",
        "::1%",
        "fe80::1%bad/name",
        "fe80::1%" + "a" * 16,
        "[127.0.0.1]",
        "[localhost]",
        "[::1",
        "localhost:80",  # host:port where a host was wanted
        "::12345",
        "::1.2.3.04",
    ],
)
def test_malformed_ipv6_is_an_address_error(host: str) -> None:
    with pytest.raises(AddressError):
        check_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "example.com",
        "example.com.",  # fully qualified: the trailing dot is kept
        "Example.COM",
        "my_host",  # /etc/hosts and SRV-style names may carry underscores
        "_dmarc.example",
        "xn--bcher-kva.example",
        "1e100.net",  # a digit start is fine when the last label is not a number
        "a." * 126 + "b",  # 253 characters
        "a." * 126 + "b.",  # 253 characters plus the root dot
        "a" * 63 + ".example",
        "-leading-hyphen",  # not ours to reject: the resolver answers for odd names
    ],
)
def test_names_pass_unchanged(host: str) -> None:
    assert check_host(host) == host
    assert not is_ip_literal(host)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("a" * 300, r"300 characters long; the limit is 253"),
        ("a." * 126 + "bc", r"254 characters long; the limit is 253"),
        ("a" * 64 + ".example", r"64 characters long; the limit is 63"),
        ("a" * 10**6, r"1000000 characters long; the limit is 253"),
        ("a..b", r"empty label"),
        (".example", r"empty label"),
        ("example..", r"empty label"),
    ],
)
def test_impossible_names_are_resolution_errors(host: str, reason: str) -> None:
    with pytest.raises(ResolutionError, match=reason) as info:
        check_host(host)
    assert isinstance(info.value, OSError)
    assert not isinstance(info.value, UnicodeError)
    assert info.value.host == host


@pytest.mark.parametrize(
    "host",
    ["a b", "a\tb", "a\0b", "a/b", "user@host", "http://example.com", "a?b", "a#b", "a%b", "a\\b"],
)
def test_forbidden_characters_are_address_errors(host: str) -> None:
    with pytest.raises(AddressError, match=r"cannot appear in a host name"):
        check_host(host)


@pytest.mark.parametrize("host", ["", "."])
def test_empty_host_and_root_are_address_errors(host: str) -> None:
    with pytest.raises(AddressError):
        check_host(host)


@pytest.mark.parametrize("host", [None, b"localhost", 127])
def test_non_str_is_a_type_error(host: object) -> None:
    with pytest.raises(TypeError, match=r"host must be a str"):
        check_host(host)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),  # UTS 46 maps case
        ("bücher.example.", "xn--bcher-kva.example."),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008; IDNA 2003 would give "fass.de"
        ("bücher\u3002example", "xn--bcher-kva.example"),  # ideographic full stop
        ("_dmarc.bücher.example", "_dmarc.xn--bcher-kva.example"),
        ("\uff11\uff12\uff17.0.0.1", "127.0.0.1"),  # full-width digits map to ASCII
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ],
)
def test_international_names_are_idna_2008_encoded(host: str, expected: str) -> None:
    assert check_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "\u2603.example",  # snowman: DISALLOWED in IDNA 2008
        "a\u200db.example",  # ZERO WIDTH JOINER outside its CONTEXTJ rule
        "ü" * 64 + ".example",  # A-label far over 63 characters
        "bücher..example",
    ],
)
def test_invalid_international_names_are_resolution_errors(host: str) -> None:
    with pytest.raises(ResolutionError) as info:
        check_host(host)
    assert not isinstance(info.value, UnicodeError)


def test_idna_error_is_chained_and_names_the_host() -> None:
    with pytest.raises(ResolutionError, match=r"IDNA 2008") as info:
        check_host("\u2603.example")
    assert isinstance(info.value.__cause__, UnicodeError)
    assert "\u2603.example" in str(info.value)


@pytest.mark.parametrize("host", ["\uff41\uff1a\uff11", "\uff41\uff0f\uff42"])
def test_full_width_delimiters_are_forbidden_after_mapping(host: str) -> None:
    # U+FF1A and U+FF0F map to ":" and "/" under UTS 46.
    with pytest.raises(AddressError, match=r"cannot appear in a host name"):
        check_host(host)


def test_full_width_ipv4_shorthand_is_still_shorthand() -> None:
    with pytest.raises(AddressError, match=r"four decimal numbers"):
        check_host("\uff11\uff12\uff17.\uff11")


def test_idna_is_imported_only_for_non_ascii_names() -> None:
    code = (
        "import sys\n"
        "from sockit.addr import check_host\n"
        "check_host('example.com'); check_host('127.0.0.1'); check_host('::1')\n"
        "print('idna' in sys.modules)\n"
        "check_host('b\\u00fccher.example')\n"
        "print('idna' in sys.modules)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
        check=True,
    )
    assert result.stdout.split() == ["False", "True"]


_label = st.from_regex(r"[a-z0-9_]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_name = st.lists(_label, min_size=1, max_size=5).map(".".join).filter(lambda n: len(n) <= 253)
_hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
    _name,
    _name.map(lambda n: n + "."),
    st.sampled_from(["bücher.example", "faß.de", "例え.テスト", "BÜCHER.example."]),
    st.text(min_size=1, max_size=30),
)


@settings(database=None)
@given(_hosts)
def test_check_host_is_idempotent(host: str) -> None:
    try:
        checked = check_host(host)
    except (AddressError, ResolutionError):
        return  # arbitrary text is mostly not a host; what is accepted must be stable
    assert checked.isascii()
    assert check_host(checked) == checked


def test_host_port_given_as_a_host_gets_a_hint() -> None:
    with pytest.raises(AddressError, match=r"looks like host:port"):
        check_host("localhost:80")
