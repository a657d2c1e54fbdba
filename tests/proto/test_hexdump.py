"""Unit tests of sockit.proto.hexdump: ncat's ``-x`` layout byte for byte.

The expected texts were captured from the real ncat 7.93 (Debian package) over
loopback: ``ncat -l 127.0.0.1 PORT -x FILE``, a Python client on 127.0.0.1 sending the
"received" chunks and ncat's stdin carrying the "sent" chunks, each chunk delivered in
full before the next one was written (so every chunk was one recv/send in ncat), then
FILE read after ncat exited. :func:`test_matches_live_ncat` repeats such a capture live
when ``ncat`` is installed.
"""

from __future__ import annotations

import itertools
import os
import selectors
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockit.proto.hexdump import BYTES_PER_LINE, LINE_WIDTH, HexDumper, hexdump

if TYPE_CHECKING:
    from pathlib import Path

    from sockit.proto.hexdump import Direction

EXAMPLES = settings(max_examples=200, deadline=None)

# The session captured from ncat 7.93 (see the module docstring) and the file it wrote.
CAPTURED_SESSION: list[tuple[Direction, bytes]] = [
    ("received", bytes(range(40))),
    ("sent", b"Hello, world! this is from the server side\x7f\x80\xff ~\n"),
    ("received", b"abc"),
    ("sent", b"0123456789abcdef"),
    ("received", b"x" * 17),
    ("sent", b"12345678"),
    ("received", b"123456789"),
    ("received", bytes(range(256))),
]
CAPTURED_DUMP = (
    "0000   00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  ................\n"
    "0010   10 11 12 13 14 15 16 17  18 19 1a 1b 1c 1d 1e 1f  ................\n"
    "0020   20 21 22 23 24 25 26 27                           .!\"#$%&'        \n"
    "0000   48 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 20 74 68  Hello,.world!.th\n"
    "0010   69 73 20 69 73 20 66 72  6f 6d 20 74 68 65 20 73  is.is.from.the.s\n"
    "0020   65 72 76 65 72 20 73 69  64 65 7f 80 ff 20 7e 0a  erver.side....~.\n"
    "0000   61 62 63                                          abc             \n"
    "0000   30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  0123456789abcdef\n"
    "0000   78 78 78 78 78 78 78 78  78 78 78 78 78 78 78 78  xxxxxxxxxxxxxxxx\n"
    "0010   78                                                x               \n"
    "0000   31 32 33 34 35 36 37 38                           12345678        \n"
    "0000   31 32 33 34 35 36 37 38  39                       123456789       \n"
    "0000   00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  ................\n"
    "0010   10 11 12 13 14 15 16 17  18 19 1a 1b 1c 1d 1e 1f  ................\n"
    "0020   20 21 22 23 24 25 26 27  28 29 2a 2b 2c 2d 2e 2f  .!\"#$%&'()*+,-./\n"
    "0030   30 31 32 33 34 35 36 37  38 39 3a 3b 3c 3d 3e 3f  0123456789:;<=>?\n"
    "0040   40 41 42 43 44 45 46 47  48 49 4a 4b 4c 4d 4e 4f  @ABCDEFGHIJKLMNO\n"
    "0050   50 51 52 53 54 55 56 57  58 59 5a 5b 5c 5d 5e 5f  PQRSTUVWXYZ[\\]^_\n"
    "0060   60 61 62 63 64 65 66 67  68 69 6a 6b 6c 6d 6e 6f  `abcdefghijklmno\n"
    "0070   70 71 72 73 74 75 76 77  78 79 7a 7b 7c 7d 7e 7f  pqrstuvwxyz{|}~.\n"
    "0080   80 81 82 83 84 85 86 87  88 89 8a 8b 8c 8d 8e 8f  ................\n"
    "0090   90 91 92 93 94 95 96 97  98 99 9a 9b 9c 9d 9e 9f  ................\n"
    "00a0   a0 a1 a2 a3 a4 a5 a6 a7  a8 a9 aa ab ac ad ae af  ................\n"
    "00b0   b0 b1 b2 b3 b4 b5 b6 b7  b8 b9 ba bb bc bd be bf  ................\n"
    "00c0   c0 c1 c2 c3 c4 c5 c6 c7  c8 c9 ca cb cc cd ce cf  ................\n"
    "00d0   d0 d1 d2 d3 d4 d5 d6 d7  d8 d9 da db dc dd de df  ................\n"
    "00e0   e0 e1 e2 e3 e4 e5 e6 e7  e8 e9 ea eb ec ed ee ef  ................\n"
    "00f0   f0 f1 f2 f3 f4 f5 f6 f7  f8 f9 fa fb fc fd fe ff  ................\n"
)


def dump_session(session: list[tuple[Direction, bytes]]) -> str:
    dumper = HexDumper()
    text = "".join(dumper.feed(data, direction) for direction, data in session)
    return text + dumper.finish()


def test_matches_captured_ncat_output() -> None:
    assert dump_session(CAPTURED_SESSION) == CAPTURED_DUMP


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Each chunk below is a line of CAPTURED_DUMP, so also captured from ncat.
        (b"abc", CAPTURED_DUMP.splitlines(keepends=True)[6]),
        (b"12345678", CAPTURED_DUMP.splitlines(keepends=True)[10]),
        (b"123456789", CAPTURED_DUMP.splitlines(keepends=True)[11]),
        (b"0123456789abcdef", CAPTURED_DUMP.splitlines(keepends=True)[7]),
    ],
)
def test_partial_and_full_lines(data: bytes, expected: str) -> None:
    assert hexdump(data) == expected
    assert len(expected) == LINE_WIDTH


def test_direction_does_not_change_the_text() -> None:
    # ncat_core.c: "Currently the log formats don't distinguish sends and receives."
    dumper = HexDumper()
    assert dumper.feed(b"same bytes\n", "sent") == dumper.feed(b"same bytes\n", "received")


def test_bad_direction_is_refused() -> None:
    with pytest.raises(ValueError, match="direction"):
        HexDumper().feed(b"x", "both")  # type: ignore[arg-type]


def test_empty_chunk_and_finish_write_nothing() -> None:
    dumper = HexDumper()
    assert dumper.feed(b"", "sent") == ""
    assert dumper.finish() == ""
    assert dumper.finish() == ""
    assert dumper.feed(b"a", "received").startswith("0000   61")


def test_accepts_every_buffer_type() -> None:
    data = b"buffer types\x00\xff"
    expected = hexdump(data)
    assert hexdump(bytearray(data)) == expected
    assert hexdump(memoryview(data)) == expected
    assert HexDumper().feed(memoryview(data), "sent") == expected


def test_offset_wraps_modulo_0xffff_like_nbase() -> None:
    # nbase_misc.c prints (16 * line) % 0xFFFF. ncat reads at most 8 KiB at a time so
    # it never gets there; a caller with bigger chunks sees the same numbers nbase
    # would print.
    lines = hexdump(bytes(16 * 4098)).splitlines()
    assert [line[:4] for line in lines[4094:]] == ["ffe0", "fff0", "0001", "0011"]


# --- properties ------------------------------------------------------------------------


def parse_dump(text: str) -> list[bytes]:
    """Read the chunks back from a dump: a line at offset 0000 starts a new chunk."""
    chunks: list[bytes] = []
    for line in text.splitlines(keepends=True):
        assert len(line) == LINE_WIDTH
        assert line.endswith("\n")
        assert line[4:7] == "   "
        assert line[56] == " "
        offset = int(line[:4], 16)
        data = bytes.fromhex(line[7:56])
        assert 1 <= len(data) <= BYTES_PER_LINE
        # Hex digits sit exactly where nbase puts them (HEX_START 7, a gap after 8).
        expected_hex = data[:8].hex(" ") + ("  " + data[8:].hex(" ") if len(data) > 8 else "")
        assert line[7:56] == expected_hex.ljust(49)
        characters = line[57:73]
        for byte, character in zip(data, characters, strict=False):
            assert character == (chr(byte) if 0x21 <= byte <= 0x7E else ".")
        assert characters[len(data) :] == " " * (BYTES_PER_LINE - len(data))
        if offset == 0:
            chunks.append(data)
        else:
            assert offset == 16 * (len(chunks[-1]) // 16)
            assert len(chunks[-1]) % 16 == 0
            chunks[-1] += data
    return chunks


@st.composite
def chunkings(draw: st.DrawFn) -> list[bytes]:
    """A stream over all byte values, cut into consecutive chunks (empty ones included)."""
    data = draw(st.binary(max_size=400))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


@EXAMPLES
@given(chunkings(), st.lists(st.sampled_from(["sent", "received"]), min_size=21, max_size=21))
def test_any_chunking_dumps_chunk_by_chunk_and_reads_back(
    chunks: list[bytes], directions: list[Direction]
) -> None:
    dumper = HexDumper()
    text = "".join(
        dumper.feed(chunk, direction) for chunk, direction in zip(chunks, directions, strict=False)
    )
    # No state between calls: the dump of the sequence is the dumps of its chunks.
    assert text == "".join(hexdump(chunk) for chunk in chunks)
    # Nothing lost or reordered: the dump reads back as the non-empty chunks.
    assert parse_dump(text) == [chunk for chunk in chunks if chunk]
    assert b"".join(parse_dump(text)) == b"".join(chunks)


@EXAMPLES
@given(st.binary(min_size=1, max_size=300))
def test_line_count(data: bytes) -> None:
    assert hexdump(data).count("\n") == -(-len(data) // BYTES_PER_LINE)


# --- the real ncat ---------------------------------------------------------------------

DEADLINE_SECONDS = 10.0


def read_exactly_from(proc: subprocess.Popen[bytes], count: int, deadline: float) -> bytes:
    """Read ``count`` bytes from the child's stdout, failing at ``deadline``."""
    assert proc.stdout is not None
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(received) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"ncat wrote {received!r} of {count} bytes in time"
            if selector.select(remaining):
                piece = os.read(proc.stdout.fileno(), count - len(received))
                assert piece, "ncat closed stdout early"
                received += piece
    return received


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    received = b""
    while len(received) < count:
        piece = sock.recv(count - len(received))
        assert piece, "ncat closed the connection early"
        received += piece
    return received


@pytest.mark.skipif(shutil.which("ncat") is None, reason="ncat is not installed")
def test_matches_live_ncat(tmp_path: Path) -> None:
    ncat = shutil.which("ncat")
    assert ncat is not None
    log = tmp_path / "hex.log"
    deadline = time.monotonic() + DEADLINE_SECONDS
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE_SECONDS)
        port = listener.getsockname()[1]
        with subprocess.Popen(
            [ncat, "-x", str(log), "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdin is not None
            try:
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(DEADLINE_SECONDS)
                    for direction, data in CAPTURED_SESSION:
                        # Each chunk arrives in full before the next is written, so
                        # ncat handles each one in a single recv or read.
                        if direction == "received":
                            connection.sendall(data)
                            assert read_exactly_from(proc, len(data), deadline) == data
                        else:
                            proc.stdin.write(data)
                            proc.stdin.flush()
                            assert recv_exactly(connection, len(data)) == data
                proc.stdin.close()
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            finally:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
    assert log.read_text(encoding="ascii") == dump_session(CAPTURED_SESSION)
