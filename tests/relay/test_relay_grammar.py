"""The relay's endpoint grammar (:mod:`sockit.relay.grammar`), as tables and properties.

* Every kind and alias parses to the fields its docstring promises, including the
  awkward forms: ``tcp:::1:80`` (an unbracketed IPv6 literal, port last), ``-`` and
  ``stdio,close-wait=1``, ``sh:echo a,b,idle-timeout=1`` (commas inside a command).
* Every option converts (durations ``500ms``, ``2s``, ``1m``; octal modes; ``v1``/``v2``)
  and is accepted only by the kinds it applies to.
* Every malformed endpoint raises :class:`~sockit.errors.AddressError` whose message
  names the endpoint as written and the bad part; a name that cannot exist raises
  :class:`~sockit.errors.ResolutionError`; a non-``str`` raises ``TypeError``.
* For arbitrary text the parser raises nothing else (hypothesis).

Pure: no socket is opened, no name resolved, no file touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sockit.errors import AddressError, ResolutionError
from sockit.relay.grammar import KINDS, EndpointOptions, EndpointSpec, parse_relay_endpoint

# --- valid endpoints ---------------------------------------------------------------------


@dataclass(frozen=True)
class Valid:
    """An endpoint as written and the fields it must parse to."""

    text: str
    kind: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    argv: tuple[str, ...] = ()


VALID = [
    # tcp: (and its aliases; the kind is case-insensitive)
    Valid("tcp:127.0.0.1:80", "tcp", host="127.0.0.1", port=80),
    Valid("tcp:localhost:8080", "tcp", host="localhost", port=8080),
    Valid("tcp:[::1]:80", "tcp", host="::1", port=80),
    Valid("tcp:::1:80", "tcp", host="::1", port=80),
    Valid("tcp:fe80::1:443", "tcp", host="fe80::1", port=443),
    Valid("tcp:127.0.0.1:65535", "tcp", host="127.0.0.1", port=65535),
    Valid("tcp:127.0.0.1:http", "tcp", host="127.0.0.1", port=80),
    Valid("TCP:127.0.0.1:80", "tcp", host="127.0.0.1", port=80),
    Valid("tcp4:127.0.0.1:80", "tcp", host="127.0.0.1", port=80),
    Valid("tcp6:[::1]:80", "tcp", host="::1", port=80),
    # tcp-listen: no host means every local address; port 0 lets the kernel choose
    Valid("tcp-listen:8080", "tcp-listen", host=None, port=8080),
    Valid("tcp-listen:0", "tcp-listen", host=None, port=0),
    Valid("tcp-listen:127.0.0.1:0", "tcp-listen", host="127.0.0.1", port=0),
    Valid("tcp-listen:[::1]:7000", "tcp-listen", host="::1", port=7000),
    Valid("tcp-listen:::1:7000", "tcp-listen", host="::1", port=7000),
    Valid("Tcp-Listen:9", "tcp-listen", host=None, port=9),
    # udp:, udp-listen:
    Valid("udp:127.0.0.1:53", "udp", host="127.0.0.1", port=53),
    Valid("udp:::1:53", "udp", host="::1", port=53),
    Valid("udp-listen:5353", "udp-listen", host=None, port=5353),
    Valid("udp-listen:127.0.0.1:0", "udp-listen", host="127.0.0.1", port=0),
    # unix:, unix-listen:, unix-dgram: (paths, abstract names)
    Valid("unix:/run/app.sock", "unix", path="/run/app.sock"),
    Valid("unix:relative.sock", "unix", path="relative.sock"),
    Valid("unix:@abstract", "unix", path="@abstract"),
    Valid("unix-listen:/tmp/x.sock", "unix-listen", path="/tmp/x.sock"),
    Valid("unix-listen:@name", "unix-listen", path="@name"),
    Valid("unix-dgram:/tmp/log.sock", "unix-dgram", path="/tmp/log.sock"),
    # stdio and -
    Valid("stdio", "stdio"),
    Valid("-", "stdio"),
    Valid("STDIO", "stdio"),
    Valid("stdio,close-wait=1", "stdio"),
    Valid("-,idle-timeout=500ms", "stdio"),
    # exec: (split like a shell, no shell) and sh: (/bin/sh -c)
    Valid("exec:sha256sum", "exec", argv=("sha256sum",)),
    Valid("exec:/bin/echo 'a b' c", "exec", argv=("/bin/echo", "a b", "c")),
    Valid("exec:echo a,b", "exec", argv=("echo", "a,b")),
    Valid("exec:echo 'a,b'", "exec", argv=("echo", "a,b")),
    Valid("exec:echo idle-timeout=3", "exec", argv=("echo", "idle-timeout=3")),
    Valid("exec:echo x,idle-timeout=3", "exec", argv=("echo", "x")),
    Valid("sh:echo a,b", "sh", argv=("/bin/sh", "-c", "echo a,b")),
    Valid("sh:echo a,b,idle-timeout=1", "sh", argv=("/bin/sh", "-c", "echo a,b")),
    Valid("sh:echo a,,b", "sh", argv=("/bin/sh", "-c", "echo a,,b")),
    Valid("sh:cat | tr a-z A-Z", "sh", argv=("/bin/sh", "-c", "cat | tr a-z A-Z")),
    Valid("system:true", "sh", argv=("/bin/sh", "-c", "true")),
    # file: (and open:)
    Valid("file:/tmp/out.bin", "file", path="/tmp/out.bin"),
    Valid("file:relative/path", "file", path="relative/path"),
    Valid("file:/tmp/x,append", "file", path="/tmp/x"),
    Valid("open:/tmp/x", "file", path="/tmp/x"),
]


@pytest.mark.parametrize("case", VALID, ids=[case.text for case in VALID])
def test_valid_endpoint_parses_to_its_fields(case: Valid) -> None:
    spec = parse_relay_endpoint(case.text)
    assert isinstance(spec, EndpointSpec)
    assert spec.kind == case.kind
    assert (spec.host, spec.port, spec.path, spec.argv) == (
        case.host,
        case.port,
        case.path,
        case.argv,
    )
    # The endpoint as written is kept for messages.
    assert spec.text == case.text
    assert str(spec) == case.text


@pytest.mark.parametrize(
    ("text", "listening", "datagram", "is_socket"),
    [
        ("tcp:127.0.0.1:1", False, False, True),
        ("tcp-listen:1", True, False, True),
        ("udp:127.0.0.1:1", False, True, True),
        ("udp-listen:1", True, True, True),
        ("unix:/x", False, False, True),
        ("unix-listen:/x", True, False, True),
        ("unix-dgram:/x", False, True, True),
        ("-", False, False, False),
        ("exec:cat", False, False, False),
        ("sh:cat", False, False, False),
        ("file:/x", False, False, False),
    ],
)
def test_kind_properties(text: str, listening: bool, datagram: bool, is_socket: bool) -> None:
    spec = parse_relay_endpoint(text)
    assert (spec.listening, spec.datagram, spec.is_socket) == (listening, datagram, is_socket)


def test_every_kind_has_a_valid_example() -> None:
    # The table above covers the whole grammar: a kind added later needs a row.
    assert {case.kind for case in VALID} == set(KINDS)


# --- options -----------------------------------------------------------------------------

OPTIONS: list[tuple[str, EndpointOptions]] = [
    # durations: bare seconds, fractions, ms, s, m, h; a flag means =1
    ("tcp:127.0.0.1:80,idle-timeout=500ms", EndpointOptions(idle_timeout=0.5)),
    ("tcp:127.0.0.1:80,idle-timeout=2s", EndpointOptions(idle_timeout=2.0)),
    ("tcp:127.0.0.1:80,idle-timeout=1m", EndpointOptions(idle_timeout=60.0)),
    ("tcp:127.0.0.1:80,idle-timeout=1h", EndpointOptions(idle_timeout=3600.0)),
    ("tcp:127.0.0.1:80,idle-timeout=2", EndpointOptions(idle_timeout=2.0)),
    ("tcp:127.0.0.1:80,idle-timeout=0.25", EndpointOptions(idle_timeout=0.25)),
    ("tcp:127.0.0.1:80,close-wait=500ms", EndpointOptions(close_wait=0.5)),
    ("tcp:127.0.0.1:80,connect-timeout=2s", EndpointOptions(connect_timeout=2.0)),
    # names are case-insensitive; spaces around names and values are ignored
    ("tcp:127.0.0.1:80,IDLE-TIMEOUT=2s", EndpointOptions(idle_timeout=2.0)),
    ("tcp:127.0.0.1:80, idle-timeout = 2 ", EndpointOptions(idle_timeout=2.0)),
    # several at once, in any order
    (
        "tcp:127.0.0.1:80,connect-timeout=1,close-wait=2,idle-timeout=3",
        EndpointOptions(idle_timeout=3.0, close_wait=2.0, connect_timeout=1.0),
    ),
    # proxy-protocol
    ("tcp:127.0.0.1:80,proxy-protocol=v1", EndpointOptions(proxy_protocol=1)),
    ("tcp:127.0.0.1:80,proxy-protocol=v2", EndpointOptions(proxy_protocol=2)),
    ("tcp:127.0.0.1:80,proxy-protocol=2", EndpointOptions(proxy_protocol=2)),
    ("tcp:127.0.0.1:80,proxy-protocol=V2", EndpointOptions(proxy_protocol=2)),
    ("tcp-listen:80,proxy-protocol=v2", EndpointOptions(proxy_protocol=2)),
    ("unix:/x,proxy-protocol=v1", EndpointOptions(proxy_protocol=1)),
    ("unix-listen:/x,proxy-protocol=v2", EndpointOptions(proxy_protocol=2)),
    # listening options
    ("tcp-listen:80,max-conns=10", EndpointOptions(max_conns=10)),
    ("tcp-listen:80,backlog=128", EndpointOptions(backlog=128)),
    ("udp-listen:53,max-conns=2,idle-timeout=1m", EndpointOptions(max_conns=2, idle_timeout=60.0)),
    ("unix-listen:/x,mode=0600", EndpointOptions(mode=0o600)),
    ("unix-listen:/x,mode=777", EndpointOptions(mode=0o777)),
    (
        "unix-listen:/x,backlog=5,max-conns=3,mode=0660",
        EndpointOptions(backlog=5, max_conns=3, mode=0o660),
    ),
    # file append: a flag, or yes/no
    ("file:/x,append", EndpointOptions(append=True)),
    ("file:/x,append=yes", EndpointOptions(append=True)),
    ("file:/x,append=true", EndpointOptions(append=True)),
    ("file:/x,append=no", EndpointOptions(append=False)),
    ("file:/x,append=0", EndpointOptions(append=False)),
    # stdio, exec and sh take the common options (and commas stay in commands)
    ("stdio,close-wait=1", EndpointOptions(close_wait=1.0)),
    ("-,idle-timeout=2s,close-wait=500ms", EndpointOptions(idle_timeout=2.0, close_wait=0.5)),
    ("sh:echo a,b,idle-timeout=1", EndpointOptions(idle_timeout=1.0)),
    (
        "exec:sha256sum,close-wait=1,idle-timeout=2",
        EndpointOptions(idle_timeout=2.0, close_wait=1.0),
    ),
    ("exec:cat,IDLE-TIMEOUT=2s", EndpointOptions(idle_timeout=2.0)),
    ("udp:127.0.0.1:53,close-wait=1", EndpointOptions(close_wait=1.0)),
    ("unix-dgram:/x,idle-timeout=1", EndpointOptions(idle_timeout=1.0)),
]


@pytest.mark.parametrize(("text", "expected"), OPTIONS, ids=[text for text, _ in OPTIONS])
def test_options_convert(text: str, expected: EndpointOptions) -> None:
    assert parse_relay_endpoint(text).options == expected


@pytest.mark.parametrize(
    ("option", "host", "port"),
    [
        ("bind=127.0.0.2", "127.0.0.2", 0),
        ("bind=127.0.0.2:4000", "127.0.0.2", 4000),
        ("bind=[::1]:7", "::1", 7),
        ("bind=[::1]", "::1", 0),
        ("bind=::1", "::1", 0),
        ("bind=0.0.0.0", "0.0.0.0", 0),
    ],
)
def test_bind_option_is_a_local_address(option: str, host: str, port: int) -> None:
    for kind in ("tcp:127.0.0.1:80", "udp:127.0.0.1:53"):
        bind = parse_relay_endpoint(f"{kind},{option}").options.bind
        assert bind is not None
        assert (bind.host, bind.port) == (host, port)


def test_no_option_means_the_defaults() -> None:
    for case in VALID:
        if "," not in case.text:
            assert parse_relay_endpoint(case.text).options == EndpointOptions()


# --- malformed endpoints -----------------------------------------------------------------

LONG_PATH = "/" + "a" * 200

INVALID: list[tuple[str, str]] = [
    # (endpoint, a fragment of the message that names the bad part)
    ("", "empty"),
    ("   ", "empty"),
    ("bogus:1", "'bogus'"),
    ("tcp-connect:127.0.0.1:80", "'tcp-connect'"),
    ("tcp", "needs an address"),
    ("tcp:", "needs an address"),
    ("tcp-listen:", "needs an address"),
    ("unix:", "needs an address"),
    ("file:", "needs an address"),
    # hosts and ports
    ("tcp:127.0.0.1", "port"),
    ("tcp::80", "needs a host"),
    ("udp::53", "needs a host"),
    ("tcp:127.0.0.1:0", "port 0"),
    ("udp:127.0.0.1:0", "port 0"),
    ("tcp:127.0.0.1:65536", "65536"),
    ("tcp:127.0.0.1:-1", "'-1'"),
    ("tcp:127.0.0.1:80x", "'80x'"),
    ("tcp-listen:99999", "99999"),
    ("tcp:[::1]80", "'80'"),
    ("tcp:1:2:3", "'1:2'"),
    ("tcp:/tmp/x", "'/tmp/x'"),
    ("tcp:h\0st:80", "'\\x00'"),
    # UNIX paths and files
    (f"unix:{LONG_PATH}", "sun_path"),
    (f"unix-listen:{LONG_PATH}", "sun_path"),
    ("unix:/x\0y", "NUL"),
    ("file:/x\0y", "NUL"),
    # commands
    ("exec:", "needs a command"),
    ("exec:   ", "needs a command"),
    ("sh:   ", "needs a command"),
    ("sh:,idle-timeout=1", "needs a command"),
    ("exec:echo 'unterminated", "cannot split"),
    # unknown options, options of other kinds, repeats, empty pieces
    ("tcp:127.0.0.1:80,idle-timout=1", "'idle-timout'"),
    ("tcp:127.0.0.1:80,,idle-timeout=1", "empty option"),
    ("tcp:127.0.0.1:80,", "empty option"),
    ("tcp:127.0.0.1:80,idle-timeout=1,idle-timeout=2", "'idle-timeout' given twice"),
    ("tcp:127.0.0.1:80,mode=0600", "'mode'"),
    ("tcp:127.0.0.1:80,max-conns=2", "'max-conns'"),
    ("tcp:127.0.0.1:80,append", "'append'"),
    ("tcp-listen:80,bind=127.0.0.1", "'bind'"),
    ("tcp-listen:80,connect-timeout=1", "'connect-timeout'"),
    ("udp:127.0.0.1:53,proxy-protocol=v2", "'proxy-protocol'"),
    ("udp:127.0.0.1:53,connect-timeout=1", "'connect-timeout'"),
    ("udp-listen:53,backlog=5", "'backlog'"),
    ("unix-dgram:/x,max-conns=2", "'max-conns'"),
    ("file:/tmp/x,mode=0600", "'mode'"),
    ("stdio,bind=127.0.0.1", "'bind'"),
    ("-,max-conns=1", "'max-conns'"),
    ("exec:cat,bind=127.0.0.1", "'bind'"),
    ("sh:cat,proxy-protocol=v2", "'proxy-protocol'"),
    # bad values
    ("tcp:127.0.0.1:80,idle-timeout=-1", "'-1'"),
    ("tcp:127.0.0.1:80,idle-timeout=abc", "'abc'"),
    ("tcp:127.0.0.1:80,idle-timeout=", "idle-timeout"),
    ("tcp:127.0.0.1:80,idle-timeout", "needs a value"),
    ("tcp:127.0.0.1:80,proxy-protocol", "needs a value"),
    ("tcp:127.0.0.1:80,idle-timeout=0", "more than 0"),
    ("tcp:127.0.0.1:80,idle-timeout=inf", "'inf'"),
    ("tcp:127.0.0.1:80,idle-timeout=nan", "'nan'"),
    ("tcp:127.0.0.1:80,idle-timeout=1e3", "'1e3'"),
    ("tcp:127.0.0.1:80,idle-timeout=5d", "'5d'"),
    ("tcp:127.0.0.1:80,close-wait=2x", "'2x'"),
    ("tcp:127.0.0.1:80,connect-timeout=soon", "'soon'"),
    ("exec:cat,idle-timeout=x", "'x'"),
    ("stdio,close-wait=never", "'never'"),
    ("tcp:127.0.0.1:80,proxy-protocol=v3", "'v3'"),
    ("tcp:127.0.0.1:80,proxy-protocol=", "proxy-protocol"),
    ("tcp-listen:80,max-conns=0", "max-conns"),
    ("tcp-listen:80,max-conns=-3", "'-3'"),
    ("tcp-listen:80,max-conns=many", "'many'"),
    ("tcp-listen:80,backlog=0", "backlog"),
    ("tcp-listen:80,backlog=1.5", "'1.5'"),
    ("unix-listen:/x,mode=999", "'999'"),
    ("unix-listen:/x,mode=10000", "'10000'"),
    ("unix-listen:/x,mode=rw", "'rw'"),
    ("file:/x,append=maybe", "'maybe'"),
    ("tcp:127.0.0.1:80,bind=somewhere", "'somewhere'"),
    ("tcp:127.0.0.1:80,bind=127.0.0.2:x", "'127.0.0.2:x'"),
    ("tcp:127.0.0.1:80,bind=127.0.0.2:99999", "99999"),
    ("tcp:127.0.0.1:80,bind=[::1]x", "'[::1]x'"),
    ("tcp:127.0.0.1:80,bind=[::1", "'[::1'"),
    # stdio takes options, never an address (see also the test below)
    ("stdio:127.0.0.1:80", "127.0.0.1:80"),
    ("stdio:", "stdio"),
    ("-:80", "80"),
    # a NUL byte can never reach execve()
    ("exec:a\0b", "NUL"),
    ("sh:echo a\0b", "NUL"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID, ids=[text for text, _ in INVALID])
def test_malformed_endpoint_names_the_endpoint_and_the_bad_part(text: str, fragment: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_relay_endpoint(text)
    message = str(caught.value)
    assert repr(text) in message, f"the endpoint is not named: {message}"
    assert fragment in message, f"{fragment!r} is not named: {message}"
    # An AddressError is a ValueError (the contract of sockit.errors).
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("text", ["stdio:127.0.0.1:80", "stdio:", "-:80", "STDIO:x:1"])
def test_stdio_with_an_address_is_refused_without_suggesting_one(text: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_relay_endpoint(text)
    # stdio has no address form: the message must not invite one ("stdio:HOST:PORT").
    assert "HOST:PORT" not in str(caught.value)
    assert "needs an address" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ["tcp:a..b:80", "tcp:" + "a" * 300 + ":80", "udp:.example:53", "tcp-listen:a..b:80"],
)
def test_a_name_that_cannot_exist_is_a_resolution_error(text: str) -> None:
    with pytest.raises(ResolutionError):
        parse_relay_endpoint(text)


@pytest.mark.parametrize("value", [None, b"tcp:127.0.0.1:80", 80, ["-"]])
def test_not_a_string_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        parse_relay_endpoint(value)  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------

OPTION_NAMES = [
    "bind",
    "proxy-protocol",
    "idle-timeout",
    "close-wait",
    "connect-timeout",
    "max-conns",
    "mode",
    "backlog",
    "append",
    "unknown",
]
PREFIXES = [f"{kind}:" for kind in KINDS] + ["-", "stdio", "tcp4:", "system:", "open:", ""]
# Text that looks like the grammar (so the parser gets past the kind most of the time)
# and arbitrary text (so nothing outside the grammar's alphabet surprises it).
GRAMMARISH = st.text(alphabet="0123456789abcdefv:[]%.@/-_ ,=\0\u00e9", max_size=40)
OPTION = st.tuples(st.sampled_from(OPTION_NAMES), GRAMMARISH).map(
    lambda pair: ",{}={}".format(*pair)
)


@settings(max_examples=500)
@given(st.text(max_size=80))
@example("tcp:::1:80")
@example("tcp:[")
@example("tcp:[:80")
@example("tcp-listen:[::1%]:0")
@example("exec:'")
@example("unix:@")
@example("tcp:127.0.0.1:80,bind=[")
def test_arbitrary_text_raises_only_address_or_resolution_errors(text: str) -> None:
    try:
        spec = parse_relay_endpoint(text)
    except (AddressError, ResolutionError):
        return
    assert spec.kind in KINDS
    assert spec.text == text


@settings(max_examples=500)
@given(
    st.sampled_from(PREFIXES),
    GRAMMARISH | st.text(max_size=30),
    st.lists(OPTION, max_size=3),
)
def test_grammar_shaped_text_raises_only_address_or_resolution_errors(
    prefix: str, body: str, options: list[str]
) -> None:
    text = prefix + body + "".join(options)
    failure: AddressError | ResolutionError | None = None
    try:
        spec = parse_relay_endpoint(text)
    except (AddressError, ResolutionError) as error:
        failure = error
    if isinstance(failure, AddressError):
        assert repr(text) in str(failure)
    if failure is not None:
        return
    assert spec.kind in KINDS
    # What parsed is consistent with its kind.
    if spec.kind in {"tcp", "udp"}:
        assert spec.host is not None
        assert spec.port is not None
        assert 1 <= spec.port <= 65535
    elif spec.kind in {"tcp-listen", "udp-listen"}:
        assert spec.port is not None
        assert 0 <= spec.port <= 65535
    elif spec.kind in {"unix", "unix-listen", "unix-dgram", "file"}:
        assert spec.path
        assert "\0" not in spec.path
    elif spec.kind in {"exec", "sh"}:
        assert spec.argv
    else:
        assert spec.kind == "stdio"
        assert (spec.host, spec.port, spec.path, spec.argv) == (None, None, None, ())


@settings(max_examples=200)
@given(
    st.floats(min_value=0, max_value=10_000, allow_nan=False, allow_infinity=False),
    st.sampled_from([("", 1.0), ("s", 1.0), ("ms", 0.001), ("m", 60.0), ("h", 3600.0)]),
)
def test_durations_scale_by_their_unit(number: float, unit: tuple[str, float]) -> None:
    suffix, scale = unit
    text = f"{number:.3f}"
    spec = parse_relay_endpoint(f"tcp:127.0.0.1:80,close-wait={text}{suffix}")
    assert spec.options.close_wait == pytest.approx(float(text) * scale)
