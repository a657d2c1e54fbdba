"""Access control by peer address: allow and deny lists of IP addresses and CIDR networks.

A server decides, right after ``accept()`` and before running any handler, whether a
peer may talk to it (ncat's ``--allow``/``--deny``/``--allowfile``/``--denyfile``,
``sockit serve --allow``). The rules, in one place so every server applies the same:

* Entries are IPv4 or IPv6 addresses (``192.0.2.7``, ``::1``) or networks in CIDR
  notation (``10.0.0.0/8``, ``2001:db8::/32``; host bits are allowed and ignored,
  ``10.1.2.3/8`` means ``10.0.0.0/8``). IPv4 shorthand (``127.1``, ``010.0.0.1``) and
  names are refused: a name would need a lookup, and its answer could change under a
  running server.
* The peer's IPv4-mapped IPv6 form (``::ffff:a.b.c.d``, what a dual-stack listener
  sees for an IPv4 client) is matched as the IPv4 address, and so are mapped entries:
  one client, one form, whichever socket accepted it (DESIGN.md, "Listening").
* An IPv6 scope (``fe80::1%eth0``) is ignored on the peer; on an entry it is refused.
* Deny wins over allow; if an allow list is given (even an empty one), only peers on
  it are permitted.

Matching costs one set lookup per distinct prefix length in the lists, not one
comparison per entry, so a long allowfile does not slow down every accept.

This module must never do network I/O: no socket, selector, thread, asyncio or sleep.
The only I/O is :meth:`AccessPolicy.from_files` reading the two list files, once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from sockit.errors import AddressError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = ["AccessPolicy", "read_access_file"]

_IPV4_BITS: Final = 32
_IPV6_BITS: Final = 128
# ::ffff:0:0/96 (RFC 4291 section 2.5.5.2): the last 32 bits are the IPv4 address.
_MAPPED_PREFIX_LENGTH: Final = 96
_COMMENT: Final = "#"


class _NetworkSet:
    """Networks of one IP version, matched by one set lookup per prefix length."""

    __slots__ = ("_bits", "_by_length")

    def __init__(self, bits: int, networks: Iterable[tuple[int, int]]) -> None:
        self._bits = bits
        keys: dict[int, set[int]] = {}
        for address, length in networks:
            keys.setdefault(length, set()).add(address >> (bits - length))
        # Longest prefixes first: the most specific entries are usually the most numerous.
        self._by_length = [
            (bits - length, frozenset(found))
            for length, found in sorted(keys.items(), reverse=True)
        ]

    def __contains__(self, address: int) -> bool:
        return any(address >> shift in found for shift, found in self._by_length)


class _AddressList:
    """Parsed entries of one list (allow or deny), both IP versions."""

    __slots__ = ("entries", "ipv4", "ipv6")

    def __init__(self, networks: list[IPv4Network | IPv6Network]) -> None:
        self.entries = tuple(str(network) for network in networks)
        self.ipv4 = _NetworkSet(
            _IPV4_BITS,
            (
                (int(network.network_address), network.prefixlen)
                for network in networks
                if network.version == 4
            ),
        )
        self.ipv6 = _NetworkSet(
            _IPV6_BITS,
            (
                (int(network.network_address), network.prefixlen)
                for network in networks
                if network.version == 6
            ),
        )

    def contains(self, address: IPv4Address | IPv6Address) -> bool:
        if address.version == 4:
            return int(address) in self.ipv4
        return int(address) in self.ipv6


class AccessPolicy:
    """Which peers may connect: allow and deny lists of IP addresses and CIDR networks.

    ``AccessPolicy()`` permits everyone; ``AccessPolicy(allow=["127.0.0.0/8", "::1"])``
    only loopback; ``AccessPolicy(deny=["192.0.2.0/24"])`` everyone but that network;
    with both, a peer must be allowed and not denied. See the module docstring for the
    entry syntax and the IPv4-mapped and scope rules.

    The policy is immutable and safe to share between threads and processes.

    Raises (from the constructor):
        TypeError: ``allow`` or ``deny`` is a single ``str`` (pass a list) or holds a
            non-``str`` entry.
        AddressError: an entry is not an IP address or CIDR network; the message names
            the entry.
    """

    __slots__ = ("_allow", "_deny")

    def __init__(
        self, allow: Iterable[str] | None = None, deny: Iterable[str] | None = None
    ) -> None:
        self._allow = None if allow is None else _AddressList(_parse_entries(allow, "allow"))
        self._deny = _AddressList([] if deny is None else _parse_entries(deny, "deny"))

    @classmethod
    def from_files(
        cls,
        allowfile: str | os.PathLike[str] | None = None,
        denyfile: str | os.PathLike[str] | None = None,
        *,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] | None = None,
    ) -> AccessPolicy:
        """A policy from ncat-style ``--allowfile``/``--denyfile`` lists, plus ``allow``/``deny``.

        A file holds entries separated by white space, usually one per line; ``#``
        starts a comment that runs to the end of the line; blank lines are ignored. The
        entries of a file are added to those given directly (ncat merges ``--allow`` and
        ``--allowfile`` the same way). An allow file that lists nobody permits nobody.

        Raises:
            OSError: a file cannot be read.
            AddressError: an invalid entry; the message names the file and line.
        """
        allow_entries = None if allow is None else _as_list(allow, "allow")
        if allowfile is not None:
            allow_entries = [*(allow_entries or []), *read_access_file(allowfile)]
        deny_entries = [] if deny is None else _as_list(deny, "deny")
        if denyfile is not None:
            deny_entries.extend(read_access_file(denyfile))
        return cls(allow_entries, deny_entries)

    def permits(self, host: str) -> bool:
        """Whether a peer at ``host`` (an IP literal, as from ``getpeername``) may connect.

        ``::ffff:a.b.c.d`` is matched as ``a.b.c.d``; a ``%scope`` suffix is ignored.
        Deny wins; with an allow list, only peers on it are permitted. Never does I/O.

        Raises:
            TypeError: ``host`` is not a ``str``.
            AddressError: ``host`` is not an IP address (UNIX peers have none: a server
                decides for them without this policy).
        """
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        # Start-up time: ipaddress is only needed by programs that filter peers (and
        # once imported, this statement is a dictionary lookup).
        import ipaddress  # noqa: PLC0415

        literal = host.partition("%")[0] if ":" in host else host
        try:
            address = ipaddress.ip_address(literal)
        except ValueError as exc:
            raise AddressError(f"cannot check access for {host!r}: not an IP address") from exc
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self._deny.contains(address):
            return False
        return self._allow is None or self._allow.contains(address)

    def __repr__(self) -> str:
        allow = None if self._allow is None else list(self._allow.entries)
        return f"AccessPolicy(allow={allow!r}, deny={list(self._deny.entries)!r})"


def _as_list(entries: Iterable[str], which: str) -> list[str]:
    if isinstance(entries, str | bytes):
        raise TypeError(
            f"{which} must be an iterable of addresses, not a single {type(entries).__name__} "
            f"(write [{entries!r}])"
        )
    return list(entries)


def _parse_entries(entries: Iterable[str], which: str) -> list[IPv4Network | IPv6Network]:
    return [_parse_entry(entry) for entry in _as_list(entries, which)]


def _parse_entry(entry: str) -> IPv4Network | IPv6Network:
    """One allow/deny entry as a network; IPv4-mapped IPv6 networks become IPv4."""
    import ipaddress  # noqa: PLC0415 - start-up time, as in AccessPolicy.permits

    if not isinstance(entry, str):
        raise TypeError(f"access list entries must be str, not {type(entry).__name__}")
    text = entry.strip()
    hint = "expected an IP address or CIDR network such as 192.0.2.0/24 or 2001:db8::/32"
    if not text:
        raise AddressError(f"invalid access list entry {entry!r}: empty; {hint}")
    if "%" in text:
        raise AddressError(
            f"invalid access list entry {entry!r}: an IPv6 scope cannot be matched "
            f"(peers are compared without it); drop the %... part"
        )
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise AddressError(f"invalid access list entry {entry!r}: {hint} ({exc})") from exc
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= _MAPPED_PREFIX_LENGTH:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - _MAPPED_PREFIX_LENGTH))
    return network


def read_access_file(path: str | os.PathLike[str]) -> list[str]:
    """The entries of an ncat-style list file (white-space separated, ``#`` comments),
    each checked.

    Raises:
        OSError: the file cannot be read.
        AddressError: an invalid entry; the message names the file and line.
    """
    name = os.fspath(path)
    with open(path, encoding="utf-8") as file:
        text = file.read()
    entries: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for word in line.partition(_COMMENT)[0].split():
            try:
                _parse_entry(word)
            except AddressError as exc:
                raise AddressError(f"{name}:{number}: {exc}") from exc
            entries.append(word)
    return entries
