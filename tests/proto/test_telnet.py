"""Unit tests of sockit.proto.telnet: every option refused, commands stripped, any
chunking giving the same result, checked against a regex reference and the real ncat."""

from __future__ import annotations

import itertools
import re
import shutil
import socket
import subprocess
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.proto.telnet import DO, DONT, IAC, SB, SE, WILL, WONT, TelnetFilter

EXAMPLES = settings(max_examples=300, deadline=None)

NOP, DM, GA, AYT = 241, 242, 249, 246
ECHO, SUPPRESS_GO_AHEAD, TERMINAL_TYPE, NAWS = 1, 3, 24, 31


def seq(*parts: int | bytes) -> bytes:
    return b"".join(bytes([part]) if isinstance(part, int) else part for part in parts)


def run(chunks: list[bytes]) -> tuple[bytes, bytes, bool]:
    telnet = TelnetFilter()
    data = bytearray()
    replies = bytearray()
    for chunk in chunks:
        piece, reply = telnet.feed(chunk)
        data += piece
        replies += reply
    return bytes(data), bytes(replies), telnet.at_boundary


CASES: list[tuple[str, bytes, bytes, bytes]] = [
    # (name, from the peer, data for the user, replies)
    ("plain data", b"hello\r\nworld", b"hello\r\nworld", b""),
    ("DO is refused with WONT", seq(IAC, DO, ECHO), b"", seq(IAC, WONT, ECHO)),
    ("WILL is refused with DONT", seq(IAC, WILL, SUPPRESS_GO_AHEAD), b"", seq(IAC, DONT, 3)),
    ("DONT needs no answer", seq(IAC, DONT, ECHO), b"", b""),
    ("WONT needs no answer", seq(IAC, WONT, ECHO), b"", b""),
    (
        "commands between data",
        seq(b"hi", IAC, DO, TERMINAL_TYPE, b"x", IAC, WILL, NAWS, b"y"),
        b"hixy",
        seq(IAC, WONT, TERMINAL_TYPE, IAC, DONT, NAWS),
    ),
    ("IAC IAC is a literal 0xff", seq(b"a", IAC, IAC, b"b"), b"a\xffb", b""),
    ("option code 255", seq(IAC, DO, IAC, b"z"), b"z", seq(IAC, WONT, IAC)),
    ("NOP dropped", seq(IAC, NOP, b"nop"), b"nop", b""),
    ("GA, DM, AYT dropped", seq(IAC, GA, b"a", IAC, DM, b"b", IAC, AYT), b"ab", b""),
    ("SE outside SB dropped", seq(IAC, SE, b"se"), b"se", b""),
    ("IAC before a non-command dropped", seq(IAC, b"A", b"B"), b"B", b""),
    (
        "subnegotiation dropped",
        seq(IAC, SB, TERMINAL_TYPE, 1, IAC, SE, b"sb"),
        b"sb",
        b"",
    ),
    (
        "IAC IAC and negotiation verbs inside SB are parameters",
        seq(IAC, SB, TERMINAL_TYPE, 0, IAC, IAC, DO, WILL, b"xterm", IAC, SE, b"ok"),
        b"ok",
        b"",
    ),
    (
        "a command inside SB ends it and is obeyed",
        seq(IAC, SB, NAWS, 0, 80, IAC, DO, ECHO, b"after"),
        b"after",
        seq(IAC, WONT, ECHO),
    ),
    (
        "IAC IAC ending a bad SB is a literal byte",
        seq(IAC, SB, 1, 2, IAC, NOP, IAC, IAC),
        b"\xff",
        b"",
    ),
    (
        "SB inside SB restarts it",
        seq(IAC, SB, 1, IAC, SB, 2, IAC, SE, b"d"),
        b"d",
        b"",
    ),
    (
        "repeated requests are answered each time",
        seq(IAC, DO, ECHO, IAC, DO, ECHO),
        b"",
        seq(IAC, WONT, ECHO, IAC, WONT, ECHO),
    ),
]


@pytest.mark.parametrize(
    ("stream", "data", "replies"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules_at_every_split(stream: bytes, data: bytes, replies: bytes) -> None:
    for cut in range(len(stream) + 1):
        assert run([stream[:cut], stream[cut:]]) == (data, replies, True), cut
    assert run([bytes([byte]) for byte in stream]) == (data, replies, True)


@pytest.mark.parametrize(
    "unfinished",
    [seq(IAC), seq(IAC, DO), seq(IAC, SB), seq(IAC, SB, 1, 2), seq(IAC, SB, 1, IAC)],
)
def test_unfinished_command_at_eof(unfinished: bytes) -> None:
    data, replies, at_boundary = run([b"data", unfinished])
    assert (data, replies, at_boundary) == (b"data", b"", False)


def at_boundary(telnet: TelnetFilter) -> bool:
    """A call, so mypy does not narrow the property between two feeds."""
    return telnet.at_boundary


def test_subnegotiation_without_end_costs_no_memory() -> None:
    telnet = TelnetFilter()
    parameters = b"p" * 65536
    tracemalloc.start()
    try:
        assert telnet.feed(seq(b"before", IAC, SB, TERMINAL_TYPE)) == (b"before", b"")
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(64):
            assert telnet.feed(parameters) == (b"", b"")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 4 MiB of parameters without IAC SE: nothing of them is kept.
    assert after - before < 4096
    assert not at_boundary(telnet)
    assert telnet.feed(seq(IAC, SE, b"after")) == (b"after", b"")
    assert at_boundary(telnet)


def test_data_without_iac_is_passed_through_unchanged() -> None:
    telnet = TelnetFilter()
    chunks: list[bytes | bytearray | memoryview] = [
        b"",
        b"abc",
        bytearray(b"\x00\xfe\xfd"),
        memoryview(b"xyz"),
    ]
    for chunk in chunks:
        assert telnet.feed(chunk) == (bytes(chunk), b"")


def test_output_types() -> None:
    data, replies = TelnetFilter().feed(bytearray(seq(b"x", IAC, DO, 1)))
    assert type(data) is bytes
    assert type(replies) is bytes


# --- a reference built differently: one regex over the whole stream --------------------

TOKEN = re.compile(
    rb"""
      (?P<literal>\xff\xff)
    | \xff(?P<verb>[\xfb-\xfe])(?P<option>.)
    | \xff\xfa(?:[^\xff]|\xff\xff)*(?:\xff\xf0|(?=\xff[^\xff\xf0])|(?P<open_sb>\xff?\Z))
    | \xff[^\xfa-\xff]
    | (?P<open_command>\xff[\xfb-\xfe]?\Z)
    | (?P<data>[^\xff]+)
    """,
    re.VERBOSE | re.DOTALL,
)


def reference(stream: bytes) -> tuple[bytes, bytes, bool]:
    """The expected ``(data, replies, at_boundary)`` for a whole stream."""
    data = bytearray()
    replies = bytearray()
    position = 0
    at_boundary = True
    while position < len(stream):
        match = TOKEN.match(stream, position)
        assert match is not None
        position = match.end()
        if match["literal"]:
            data.append(IAC)
        elif match["data"]:
            data += match["data"]
        elif match["verb"]:
            refusal = {DO: WONT, WILL: DONT}.get(match["verb"][0])
            if refusal is not None:
                replies += bytes([IAC, refusal]) + match["option"]
        # Only the last token can be unfinished: the stream ended inside it.
        at_boundary = match["open_sb"] is None and match["open_command"] is None
    return bytes(data), bytes(replies), at_boundary


# Small alphabet so that commands, split commands and subnegotiations are common.
ALPHABET = [IAC, IAC, IAC, DO, DONT, WILL, WONT, SB, SE, NOP, ord("a"), ord("b"), 0]
streams = st.lists(st.sampled_from(ALPHABET), max_size=120).map(bytes)


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(streams)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=30)))
    bounds = [0, *cuts, len(data)]
    return data, [data[start:end] for start, end in itertools.pairwise(bounds)]


@EXAMPLES
@given(chunkings())
def test_any_chunking_gives_the_whole_stream_result(case: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = case
    whole = run([stream])
    assert run(chunks) == whole
    assert whole == reference(stream)
    data, replies, _ = whole
    assert len(data) + len(replies) <= len(stream)


@EXAMPLES
@given(st.binary(max_size=200))
def test_any_bytes_never_raise(stream: bytes) -> None:
    assert run([stream]) == reference(stream)


# --- the real ncat: its replies to DO and WILL are ours ---------------------------------

DEADLINE_SECONDS = 10.0


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    received = b""
    while len(received) < count:
        piece = sock.recv(count - len(received))
        assert piece, "ncat closed the connection early"
        received += piece
    return received


@pytest.mark.skipif(shutil.which("ncat") is None, reason="ncat is not installed")
def test_replies_match_live_ncat() -> None:
    ncat = shutil.which("ncat")
    assert ncat is not None
    # ncat 7.93 only looks at commands at the start of each chunk it receives, so each
    # request goes alone and its answer is awaited before the next one is sent.
    requests = [seq(IAC, DO, ECHO), seq(IAC, WILL, SUPPRESS_GO_AHEAD), seq(IAC, DO, 34)]
    deadline = time.monotonic() + DEADLINE_SECONDS
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE_SECONDS)
        port = listener.getsockname()[1]
        with subprocess.Popen(
            [ncat, "-t", "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdin is not None
            try:
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(DEADLINE_SECONDS)
                    for request in requests:
                        connection.sendall(request)
                        expected = TelnetFilter().feed(request)[1]
                        assert len(expected) == 3
                        assert recv_exactly(connection, 3) == expected
                proc.stdin.close()
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            finally:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
