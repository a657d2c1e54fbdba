r"""Unit tests of sockit.proto.lineends: ncat's ``-C`` rule (an LF without a CR before it
becomes CRLF), the same for any chunking, checked against the real ncat.

The expected pairs in :data:`NCAT_CHUNKS` were captured from the real ncat 7.93 over
loopback: ``ncat -C 127.0.0.1 PORT`` to a Python listener, each chunk written to ncat's
stdin and received in full by the listener before the next one was written (so a CR
ending one chunk and the LF starting the next really were two reads in ncat).
:func:`test_matches_live_ncat` repeats that capture when ``ncat`` is installed.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.proto.lineends import CrlfEncoder

EXAMPLES = settings(max_examples=300, deadline=None)

NCAT_CHUNKS: list[tuple[bytes, bytes]] = [
    # (written to ncat -C's stdin, what ncat sent)
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"c\r\nd", b"c\r\nd"),
    (b"e\rf", b"e\rf"),
    (b"\r\r\n", b"\r\r\n"),
    (b"\n\n", b"\r\n\r\n"),
    (b"g\r", b"g\r"),
    (b"\nh", b"\nh"),  # the CR ended the previous chunk
    (b"\n", b"\r\n"),
    (b"i\r", b"i\r"),
    (b"\r", b"\r"),
    (b"\n", b"\n"),
    (b"\r\n\n", b"\r\n\r\n"),
]


def encode(chunks: list[bytes]) -> bytes:
    encoder = CrlfEncoder()
    return b"".join(encoder.feed(chunk) for chunk in chunks)


def test_matches_captured_ncat_output() -> None:
    encoder = CrlfEncoder()
    assert [encoder.feed(sent) for sent, _ in NCAT_CHUNKS] == [got for _, got in NCAT_CHUNKS]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", b""),
        (b"no newline", b"no newline"),
        (b"\n", b"\r\n"),
        (b"line\n", b"line\r\n"),
        (b"crlf stays\r\n", b"crlf stays\r\n"),
        (b"lone \r stays", b"lone \r stays"),
        (b"\r\r\n", b"\r\r\n"),
        (b"\n\r", b"\r\n\r"),
        (b"\n\r\n\n", b"\r\n\r\n\r\n"),
        (b"\r\n\r\n", b"\r\n\r\n"),
        (b"\xff\n\x00\n", b"\xff\r\n\x00\r\n"),
    ],
)
def test_rule_at_every_split(data: bytes, expected: bytes) -> None:
    assert encode([data]) == expected
    for cut in range(len(data) + 1):
        assert encode([data[:cut], data[cut:]]) == expected, cut
    assert encode([bytes([byte]) for byte in data]) == expected


def test_empty_chunk_keeps_the_state() -> None:
    encoder = CrlfEncoder()
    assert encoder.feed(b"x\r") == b"x\r"
    assert encoder.feed(b"") == b""
    assert encoder.feed(b"\n") == b"\n"
    assert encoder.feed(b"\n") == b"\r\n"


def test_accepts_every_buffer_type() -> None:
    encoder = CrlfEncoder()
    assert encoder.feed(bytearray(b"a\n")) == b"a\r\n"
    assert encoder.feed(memoryview(b"b\r")) == b"b\r"
    assert encoder.feed(memoryview(b"\nc")) == b"\nc"


# --- properties ------------------------------------------------------------------------


def reference(stream: bytes) -> bytes:
    """ncat's fix_line_endings, byte by byte, over the whole stream."""
    out = bytearray()
    previous = None
    for byte in stream:
        if byte == 0x0A and previous != 0x0D:
            out += b"\r"
        out.append(byte)
        previous = byte
    return bytes(out)


streams = st.lists(st.sampled_from(b"\r\n\r\nab\x00"), max_size=200).map(bytes)


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
    assert encode(chunks) == encode([stream]) == reference(stream)


@EXAMPLES
@given(st.binary(max_size=200))
def test_only_crs_are_added(stream: bytes) -> None:
    out = encode([stream])
    assert out.replace(b"\r\n", b"\n") == stream.replace(b"\r\n", b"\n")
    assert out.count(b"\n") == out.count(b"\r\n") == stream.count(b"\n")
    assert len(out) <= 2 * len(stream)


# --- the real ncat ---------------------------------------------------------------------

DEADLINE_SECONDS = 10.0


def recv_at_least(sock: socket.socket, count: int) -> bytes:
    received = b""
    while len(received) < count:
        piece = sock.recv(65536)
        assert piece, "ncat closed the connection early"
        received += piece
    return received


@pytest.mark.skipif(shutil.which("ncat") is None, reason="ncat is not installed")
def test_matches_live_ncat() -> None:
    ncat = shutil.which("ncat")
    assert ncat is not None
    deadline = time.monotonic() + DEADLINE_SECONDS
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE_SECONDS)
        port = listener.getsockname()[1]
        with subprocess.Popen(
            [ncat, "-C", "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdin is not None
            try:
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(DEADLINE_SECONDS)
                    encoder = CrlfEncoder()
                    for chunk, _ in NCAT_CHUNKS:
                        # Await each chunk, so ncat reads it alone: the CR/LF split
                        # across two reads is then really exercised.
                        proc.stdin.write(chunk)
                        proc.stdin.flush()
                        expected = encoder.feed(chunk)
                        assert recv_at_least(connection, len(expected)) == expected
                    proc.stdin.close()
                    # stdin EOF: ncat sends FIN after the last byte, and nothing more.
                    assert connection.recv(1) == b""
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            finally:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
