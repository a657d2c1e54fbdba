"""AccessPolicy (sockit.proto.access): allow/deny by IP address and CIDR network.

Table tests for the rules (deny wins, allow restricts, IPv4-mapped peers and entries
are IPv4, scopes, invalid entries), the ncat-style list files, and a property test
against a naive reference built on the ipaddress module.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.errors import AddressError
from sockit.proto.access import AccessPolicy

if TYPE_CHECKING:
    from pathlib import Path

LOOPBACK = ["127.0.0.0/8", "::1"]


@pytest.mark.parametrize(
    ("allow", "deny", "host", "permitted"),
    [
        # No lists: everyone.
        pytest.param(None, None, "192.0.2.1", True, id="open-v4"),
        pytest.param(None, None, "2001:db8::1", True, id="open-v6"),
        # Allow lists restrict.
        pytest.param(LOOPBACK, None, "127.0.0.1", True, id="allow-in-network"),
        pytest.param(LOOPBACK, None, "127.255.255.255", True, id="allow-network-edge"),
        pytest.param(LOOPBACK, None, "128.0.0.0", False, id="allow-outside"),
        pytest.param(LOOPBACK, None, "::1", True, id="allow-v6-address"),
        pytest.param(LOOPBACK, None, "::2", False, id="allow-v6-outside"),
        pytest.param([], None, "127.0.0.1", False, id="empty-allow-refuses-all"),
        # Deny lists exclude, and win over allow.
        pytest.param(None, ["192.0.2.0/24"], "192.0.2.200", False, id="deny"),
        pytest.param(None, ["192.0.2.0/24"], "192.0.3.1", True, id="deny-outside"),
        pytest.param(LOOPBACK, ["127.0.0.2"], "127.0.0.2", False, id="deny-wins"),
        pytest.param(LOOPBACK, ["127.0.0.2"], "127.0.0.3", True, id="deny-wins-only-there"),
        pytest.param(None, ["::/0"], "2001:db8::1", False, id="deny-all-v6"),
        pytest.param(None, ["::/0"], "192.0.2.1", True, id="v6-deny-spares-v4"),
        pytest.param(["0.0.0.0/0"], None, "::1", False, id="v4-allow-not-v6"),
        # IPv4-mapped peers are IPv4 (a dual-stack listener's view of an IPv4 client).
        pytest.param(LOOPBACK, None, "::ffff:127.0.0.1", True, id="mapped-peer-allowed"),
        pytest.param(LOOPBACK, None, "::FFFF:7f00:1", True, id="mapped-peer-hex"),
        pytest.param(None, ["10.0.0.1"], "::ffff:10.0.0.1", False, id="mapped-peer-denied"),
        pytest.param(None, ["::ffff:10.0.0.0/104"], "10.1.2.3", False, id="mapped-entry"),
        pytest.param(["::ffff:10.0.0.1"], None, "10.0.0.1", True, id="mapped-entry-address"),
        pytest.param(["::ffff:0:0/96"], None, "192.0.2.1", True, id="mapped-entry-all-v4"),
        pytest.param(["::/0"], None, "192.0.2.1", False, id="v6-all-is-not-mapped"),
        # Scopes are ignored on peers.
        pytest.param(["fe80::/10"], None, "fe80::1%eth0", True, id="scope-stripped"),
        pytest.param(None, ["fe80::1"], "fe80::1%2", False, id="scope-stripped-deny"),
        # Host bits in a network are ignored (10.1.2.3/8 is 10.0.0.0/8).
        pytest.param(["10.1.2.3/8"], None, "10.200.0.1", True, id="host-bits"),
        pytest.param(["2001:db8::1/32"], None, "2001:db8:ffff::1", True, id="host-bits-v6"),
        pytest.param([" 127.0.0.1 "], None, "127.0.0.1", True, id="entry-whitespace"),
        pytest.param(["10.0.0.0/255.0.0.0"], None, "10.9.9.9", True, id="netmask"),
    ],
)
def test_permits(
    allow: list[str] | None, deny: list[str] | None, host: str, permitted: bool
) -> None:
    assert AccessPolicy(allow, deny).permits(host) is permitted


def test_iterables_of_any_kind_are_accepted() -> None:
    policy = AccessPolicy(allow=(entry for entry in LOOPBACK), deny=frozenset({"127.0.0.2"}))
    assert policy.permits("127.0.0.1")
    assert not policy.permits("127.0.0.2")


@pytest.mark.parametrize(
    "entry",
    [
        "127.1",
        "010.0.0.1",
        "0x7f.0.0.1",
        "2130706433",
        "localhost",
        "example.com",
        "",
        "   ",
        "10.0.0.0/33",
        "::1/129",
        "10.0.0.0/",
        "/8",
        "10.0.0.0/-1",
        "fe80::1%eth0",
        "1.2.3.4.5",
        "[::1]",
        "::1::2",
    ],
)
def test_invalid_entries_are_named(entry: str) -> None:
    for policy_arguments in ({"allow": [entry]}, {"deny": ["127.0.0.1", entry]}):
        with pytest.raises(AddressError) as caught:
            AccessPolicy(**policy_arguments)
        assert repr(entry) in str(caught.value)


def test_a_single_string_is_not_a_list() -> None:
    with pytest.raises(TypeError, match=r"\['127.0.0.1'\]"):
        AccessPolicy(allow="127.0.0.1")
    with pytest.raises(TypeError, match="deny"):
        AccessPolicy(deny="")


def test_non_str_entries_are_refused() -> None:
    with pytest.raises(TypeError, match="str"):
        AccessPolicy(allow=[ipaddress.ip_address("127.0.0.1")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="str"):
        AccessPolicy(deny=[b"127.0.0.1"])  # type: ignore[list-item]


@pytest.mark.parametrize("host", ["localhost", "", "127.1", "[::1]", "unix:/x", "1.2.3.4:80"])
def test_permits_needs_an_ip_literal(host: str) -> None:
    with pytest.raises(AddressError, match="not an IP address"):
        AccessPolicy().permits(host)


def test_permits_needs_a_str() -> None:
    with pytest.raises(TypeError, match="str"):
        AccessPolicy().permits(b"127.0.0.1")  # type: ignore[arg-type]


def test_repr_shows_normalised_entries() -> None:
    policy = AccessPolicy(allow=["10.1.2.3/8", "::ffff:192.0.2.1"], deny=["::1"])
    assert repr(policy) == ("AccessPolicy(allow=['10.0.0.0/8', '192.0.2.1/32'], deny=['::1/128'])")
    assert repr(AccessPolicy()) == "AccessPolicy(allow=None, deny=[])"


# --- ncat-style list files --------------------------------------------------------------


def test_from_files(tmp_path: Path) -> None:
    allowfile = tmp_path / "allow"
    allowfile.write_text(
        "# trusted networks\n127.0.0.0/8   # loopback\n\n   ::1\n192.0.2.0/24 198.51.100.7\n",
        encoding="utf-8",
    )
    denyfile = tmp_path / "deny"
    denyfile.write_text("127.0.0.2\n#198.51.100.7\n", encoding="utf-8")
    policy = AccessPolicy.from_files(allowfile, str(denyfile))
    assert policy.permits("127.0.0.1")
    assert policy.permits("::1")
    assert policy.permits("192.0.2.77")
    assert policy.permits("198.51.100.7")
    assert not policy.permits("127.0.0.2")
    assert not policy.permits("198.51.100.8")


def test_from_files_merges_direct_entries(tmp_path: Path) -> None:
    allowfile = tmp_path / "allow"
    allowfile.write_text("127.0.0.1\n", encoding="utf-8")
    policy = AccessPolicy.from_files(allowfile, allow=["::1"], deny=["127.0.0.1"])
    assert policy.permits("::1")
    assert not policy.permits("127.0.0.1")
    assert not policy.permits("127.0.0.3")


def test_from_files_without_files_is_the_plain_constructor() -> None:
    assert repr(AccessPolicy.from_files()) == repr(AccessPolicy())
    assert repr(AccessPolicy.from_files(deny=["::1"])) == repr(AccessPolicy(deny=["::1"]))


def test_from_files_with_an_empty_allowfile_permits_nobody(tmp_path: Path) -> None:
    allowfile = tmp_path / "allow"
    allowfile.write_text("# nobody yet\n", encoding="utf-8")
    assert not AccessPolicy.from_files(allowfile).permits("127.0.0.1")


def test_from_files_names_the_file_and_line(tmp_path: Path) -> None:
    denyfile = tmp_path / "deny"
    denyfile.write_text("127.0.0.1\n\n10.0.0.1 example.com # oops\n", encoding="utf-8")
    with pytest.raises(AddressError, match=rf"{denyfile}:3: .*'example.com'"):
        AccessPolicy.from_files(denyfile=denyfile)


def test_from_files_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AccessPolicy.from_files(tmp_path / "missing")


# --- against a naive reference ----------------------------------------------------------


def networks(version: Literal[4, 6]) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    addresses = st.ip_addresses(v=version)
    return st.builds(
        lambda address, length: str(ipaddress.ip_network(f"{address}/{length}", strict=False)),
        addresses,
        st.integers(0, bits).filter(lambda length: length == 0 or length >= bits - 12),
    )


mapped_networks = st.builds(
    lambda address, length: f"::ffff:{address}/{96 + length}",
    st.ip_addresses(v=4),
    st.sampled_from([0, 8, 20, 24, 31, 32]),
)
entries = st.lists(networks(4) | networks(6) | mapped_networks, max_size=8)
peers = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=4).map(lambda address: f"::ffff:{address}"),
)


def reference(allow: list[str] | None, deny: list[str], host: str) -> bool:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped

    def network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        parsed = ipaddress.ip_network(item, strict=False)
        mapped_all = ipaddress.IPv6Network("::ffff:0:0/96")
        if isinstance(parsed, ipaddress.IPv6Network) and parsed.subnet_of(mapped_all):
            # An entry inside ::ffff:0:0/96 names IPv4 peers.
            first = parsed.network_address.ipv4_mapped
            assert first is not None
            return ipaddress.IPv4Network((first, parsed.prefixlen - 96))
        return parsed

    def listed(items: list[str]) -> bool:
        return any(address in network(item) for item in items)

    return not listed(deny) and (allow is None or listed(allow))


@settings(max_examples=300, deadline=None)
@given(st.none() | entries, entries, st.lists(peers, min_size=1, max_size=5), st.data())
def test_matches_naive_reference(
    allow: list[str] | None,
    deny: list[str],
    hosts: list[str],
    data: st.DataObject,
) -> None:
    policy = AccessPolicy(allow, deny)
    candidates = list(hosts)
    # Also peers inside the listed networks, which random addresses rarely hit.
    for entry in (allow or []) + deny:
        network = ipaddress.ip_network(entry, strict=False)
        offset = data.draw(st.integers(0, network.num_addresses - 1))
        candidates.append(str(network.network_address + offset))
    for host in candidates:
        assert policy.permits(host) is reference(allow, deny, host), host
