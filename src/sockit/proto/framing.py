r"""Framing: cutting a byte stream into messages (frames) and back, without I/O.

Three framings, each a decoder (bytes in, frames out) plus an encoder (frame in, bytes
to send), paired in one :class:`Framing` object so a wrapper such as
:class:`sockit.sync.framed.FramedStream` takes a single argument:

* :class:`Lines`: each frame ends with ``b"\\n"`` (the newline is not part of the frame;
  a ``b"\\r"`` before it is kept, exactly like ``Stream.recv_line``).
* :class:`Delimited`: each frame ends with an arbitrary non-empty delimiter
  (``b"\\0"``, ``b"\\r\\n"``, ...).
* :class:`LengthPrefixed`: each frame is an unsigned big-endian (network byte order)
  length of 1, 2, 4 or 8 bytes followed by that many payload bytes.

Decoder contract (:class:`FrameDecoder`), the same for all three:

* ``feed(data)`` appends received bytes; ``next_frame()`` returns the next complete
  frame or ``None`` ("need more data"); iterating drains the frames that are ready.
* **Limits.** Every decoder has a maximum frame size. A frame over it raises
  :class:`~sockit.LimitExceeded` as soon as that is certain: for delimiters when more
  than the maximum is buffered without a delimiter, for length prefixes as soon as the
  prefix announces it (the body is never buffered). The bytes stay buffered and every
  later ``next_frame()`` raises again: a stream cannot be resynchronised after that.
* **EOF.** ``close_input()`` says the input ended. If the input ended inside a frame,
  :class:`~sockit.IncompleteRead` is raised (once) with the bytes of that frame, after
  the complete frames before it were taken. ``at_boundary`` tells a caller at EOF
  whether that was a clean end.

All the buffering is :class:`sockit.proto.buffer.ReceiveBuffer`'s: limits, linear-time
delimiter searches and no lost bytes live there once.

This module must never do I/O: no socket, selector, thread, asyncio or sleep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias

from sockit.errors import IncompleteRead, LimitExceeded
from sockit.proto.buffer import ReceiveBuffer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sockit.abc import Buffer

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LINE",
    "Delimited",
    "DelimiterDecoder",
    "FrameDecoder",
    "Framing",
    "LengthPrefixDecoder",
    "LengthPrefixed",
    "LineDecoder",
    "Lines",
    "PrefixSize",
    "encode_delimited",
    "encode_length_prefixed",
    "encode_line",
]

PrefixSize: TypeAlias = Literal[1, 2, 4, 8]
"""Sizes of a length prefix, in bytes."""

DEFAULT_MAX_LINE: Final = 65536
"""Default longest line (without its newline): the same as ``Stream.recv_line``'s
``max_bytes`` default, so a line the stream helper accepts is a frame here too."""

DEFAULT_MAX_FRAME_SIZE: Final = 4 * 1024 * 1024
"""Default largest length-prefixed payload: 4 MiB.

This is gRPC's default maximum received message size
(``GRPC_DEFAULT_MAX_RECV_MESSAGE_LENGTH`` in gRPC core), the best-known precedent for a
length-prefixed protocol exposed to untrusted peers: large enough for ordinary RPC
payloads, small enough that a hostile 4-byte prefix (up to 4 GiB) cannot make us
allocate without bound. (Kafka's ``socket.request.max.bytes`` of 100 MiB is sized for
trusted brokers inside one cluster, not for peers on the open network.) Pass a larger
``max_size`` to both ends when a protocol needs it.
"""

_PREFIX_SIZES: Final = (1, 2, 4, 8)
_NEWLINE: Final = b"\n"


class FrameDecoder(Protocol):
    """Bytes in, frames out; see the module docstring for the full contract."""

    def feed(self, data: Buffer) -> None:
        """Append received bytes. ``b""`` is ignored (EOF is :meth:`close_input`).

        Raises ``RuntimeError`` after :meth:`close_input`.
        """

    def next_frame(self) -> bytes | None:
        """Remove and return the next complete frame, or ``None`` for "not yet".

        ``None`` means more input is needed or, after :meth:`close_input`, that no
        frame is left.

        Raises :class:`~sockit.LimitExceeded` (every time) for a frame over the limit,
        and after :meth:`close_input` :class:`~sockit.IncompleteRead` (once) when only
        an unfinished frame is left.
        """

    def __iter__(self) -> Iterator[bytes]:
        """Yield the frames that are complete now (``next_frame()`` until ``None``)."""

    def close_input(self) -> None:
        """Declare the end of the input (the peer sent EOF). Idempotent.

        If no complete frame is left and an unfinished one is buffered, raises
        :class:`~sockit.IncompleteRead` with its bytes (which are then dropped: they
        are in the exception). If complete frames are still buffered, they stay
        available and :meth:`next_frame` raises the ``IncompleteRead`` after the last
        one. May raise :class:`~sockit.LimitExceeded` like :meth:`next_frame`.
        """

    @property
    def at_boundary(self) -> bool:
        """True when nothing is buffered: every byte fed was returned in a frame.

        Right after ``next_frame()`` returned ``None`` this means "no partial frame":
        an EOF now is a clean end (``EndOfStream``), not ``IncompleteRead``.
        """

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned in a frame (prefixes, delimiters included)."""


class Framing(Protocol):
    """A framing: makes decoders, and encodes frames the decoders accept."""

    def decoder(self) -> FrameDecoder:
        """Return a new decoder in its initial state."""

    def encode(self, frame: Buffer) -> bytes:
        """Return the bytes to send for ``frame``.

        Raises ``ValueError`` (before anything is sent) for a frame this framing cannot
        carry, or that is larger than the limit its own decoders enforce.
        """


# --- decoders ---------------------------------------------------------------------


class _BufferedDecoder:
    """What every decoder shares: a ReceiveBuffer, EOF handling and iteration.

    Subclasses implement ``_take_frame`` (None: need more data), ``_wire_size`` (bytes
    a returned frame occupied on the wire) and ``_take_partial`` (remove and return the
    unfinished frame for IncompleteRead).
    """

    __slots__ = ("_buffer", "_input_closed", "_ready", "_ready_size")

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer()
        self._input_closed = False
        # One frame taken ahead by close_input() to learn whether the input ended
        # inside a frame; handed out first by next_frame().
        self._ready: bytes | None = None
        self._ready_size = 0

    def feed(self, data: Buffer) -> None:
        """See :meth:`FrameDecoder.feed`."""
        if self._input_closed:
            raise RuntimeError("feed() after close_input(): the input has ended")
        if data:
            self._buffer.feed(data)

    def next_frame(self) -> bytes | None:
        """See :meth:`FrameDecoder.next_frame`."""
        frame = self._ready
        if frame is not None:
            self._ready = None
            self._ready_size = 0
            return frame
        frame = self._take_frame()
        if frame is None and self._input_closed:
            self._raise_if_partial()
        return frame

    def __iter__(self) -> Iterator[bytes]:
        """See :meth:`FrameDecoder.__iter__`."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def close_input(self) -> None:
        """See :meth:`FrameDecoder.close_input`."""
        if self._input_closed:
            return
        self._input_closed = True
        if self._ready is None:
            frame = self._take_frame()
            if frame is not None:
                self._ready = frame
                self._ready_size = self._wire_size(frame)
                return
            self._raise_if_partial()

    @property
    def input_closed(self) -> bool:
        """Whether :meth:`close_input` was called."""
        return self._input_closed

    @property
    def at_boundary(self) -> bool:
        """See :attr:`FrameDecoder.at_boundary`."""
        return self._ready is None and not self._has_partial()

    @property
    def buffered(self) -> int:
        """See :attr:`FrameDecoder.buffered`."""
        return self._ready_size + self._partial_size()

    def _raise_if_partial(self) -> None:
        if self._has_partial():
            partial, expected = self._take_partial()
            raise IncompleteRead(partial, expected)

    # Overridden by subclasses (the buffer-only defaults suit delimiter framings).

    def _take_frame(self) -> bytes | None:
        raise NotImplementedError

    def _wire_size(self, frame: bytes) -> int:
        raise NotImplementedError

    def _has_partial(self) -> bool:
        return bool(self._buffer)

    def _partial_size(self) -> int:
        return len(self._buffer)

    def _take_partial(self) -> tuple[bytes, int | None]:
        return self._buffer.take_all(), None


class LineDecoder(_BufferedDecoder):
    r"""Frames are lines ending with ``b"\n"``; the newline is removed.

    A ``b"\r"`` before it is kept (use ``DelimiterDecoder(b"\r\n", ...)`` for CRLF
    protocols), as ``Stream.recv_line`` does.

    A line longer than ``max_line`` bytes (without its newline) raises
    :class:`~sockit.LimitExceeded` once more than ``max_line`` bytes are buffered
    without a newline. At EOF an unterminated last line is an
    :class:`~sockit.IncompleteRead` (``expected`` is ``None``), never a frame.
    """

    __slots__ = ("_max_line",)

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__()
        self._max_line = _check_limit("max_line", max_line)

    @property
    def max_line(self) -> int:
        """The longest line accepted, without its newline."""
        return self._max_line

    def _take_frame(self) -> bytes | None:
        return self._buffer.take_line(self._max_line)

    def _wire_size(self, frame: bytes) -> int:
        return len(frame) + 1


class DelimiterDecoder(_BufferedDecoder):
    """Frames end with ``delimiter`` (non-empty), which is removed.

    A frame longer than ``max_bytes`` raises :class:`~sockit.LimitExceeded` once
    ``max_bytes + len(delimiter)`` bytes are buffered and no delimiter starts within the
    first ``max_bytes + 1`` of them. At EOF an unterminated frame (possibly ending in
    part of a delimiter) is an :class:`~sockit.IncompleteRead` (``expected`` is
    ``None``).
    """

    __slots__ = ("_delimiter", "_max_bytes")

    def __init__(self, delimiter: bytes, max_bytes: int) -> None:
        super().__init__()
        self._delimiter = _check_delimiter(delimiter)
        self._max_bytes = _check_limit("max_bytes", max_bytes)

    @property
    def delimiter(self) -> bytes:
        """The bytes that end each frame."""
        return self._delimiter

    @property
    def max_bytes(self) -> int:
        """The largest frame accepted, without its delimiter."""
        return self._max_bytes

    def _take_frame(self) -> bytes | None:
        return self._buffer.take_until(self._delimiter, self._max_bytes)

    def _wire_size(self, frame: bytes) -> int:
        return len(frame) + len(self._delimiter)


class LengthPrefixDecoder(_BufferedDecoder):
    """Frames are a big-endian length prefix followed by that many payload bytes.

    The prefix is unsigned, ``prefix_size`` bytes (1, 2, 4 or 8); the payload is the
    frame. Zero-length frames are frames (``b""``).

    A prefix announcing more than ``max_size`` bytes raises
    :class:`~sockit.LimitExceeded` at once, before any of the body is buffered; the
    prefix stays buffered, so every later call raises again. At EOF an unfinished frame
    is an :class:`~sockit.IncompleteRead` whose ``partial`` is the frame's bytes as
    they were on the wire (prefix included, so no byte is lost) and whose ``expected``
    is the frame's full length on the wire (``prefix_size + length``), or just
    ``prefix_size`` when the EOF cut the prefix itself.
    """

    __slots__ = ("_header", "_length", "_max_size", "_prefix_size")

    def __init__(self, prefix_size: PrefixSize = 4, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        super().__init__()
        self._prefix_size = _check_prefix_size(prefix_size)
        self._max_size = _check_limit("max_size", max_size)
        # The prefix of the frame being received and the length it announced; None
        # while waiting for a prefix.
        self._header = b""
        self._length: int | None = None

    @property
    def prefix_size(self) -> int:
        """Bytes of the length prefix."""
        return self._prefix_size

    @property
    def max_size(self) -> int:
        """The largest payload accepted."""
        return self._max_size

    def _take_frame(self) -> bytes | None:
        buffer = self._buffer
        length = self._length
        if length is None:
            header = buffer.take_exactly(self._prefix_size)
            if header is None:
                return None
            length = int.from_bytes(header, "big")
            if length > self._max_size:
                buffer.unread(header)
                raise LimitExceeded(
                    f"length prefix announces a frame of {length} bytes (max_size={self._max_size})"
                )
            self._header = header
            self._length = length
        payload = buffer.take_exactly(length)
        if payload is None:
            return None
        self._header = b""
        self._length = None
        return payload

    def _wire_size(self, frame: bytes) -> int:
        return len(frame) + self._prefix_size

    def _has_partial(self) -> bool:
        return self._length is not None or bool(self._buffer)

    def _partial_size(self) -> int:
        return len(self._header) + len(self._buffer)

    def _take_partial(self) -> tuple[bytes, int | None]:
        partial = self._header + self._buffer.take_all()
        expected = self._prefix_size if self._length is None else self._prefix_size + self._length
        self._header = b""
        self._length = None
        return partial, expected


# --- encoders ---------------------------------------------------------------------


def encode_line(line: Buffer, *, max_line: int | None = None) -> bytes:
    r"""Return ``line + b"\n"``.

    Raises ``ValueError`` if ``line`` contains ``b"\n"`` (it would arrive as two
    lines) or is longer than ``max_line`` (when given).
    """
    return encode_delimited(line, _NEWLINE, max_bytes=max_line)


def encode_delimited(frame: Buffer, delimiter: bytes, *, max_bytes: int | None = None) -> bytes:
    """Return ``frame + delimiter``.

    Raises ``ValueError`` if the decoder would not get ``frame`` back: ``frame``
    contains the delimiter, or ends with bytes that form the delimiter together with
    its start (``b"xa"`` with delimiter ``b"aa"`` would be cut after ``b"x"``); or
    ``frame`` is longer than ``max_bytes`` (when given).
    """
    _check_delimiter(delimiter)
    data = bytes(frame) + delimiter
    if max_bytes is not None and len(data) - len(delimiter) > max_bytes:
        raise ValueError(
            f"frame of {len(data) - len(delimiter)} bytes is over max_bytes={max_bytes}"
        )
    if data.find(delimiter) != len(data) - len(delimiter):
        raise ValueError(f"frame contains the delimiter {delimiter!r}")
    return data


def encode_length_prefixed(
    frame: Buffer, prefix_size: PrefixSize = 4, *, max_size: int | None = None
) -> bytes:
    """Return ``frame`` after its big-endian length in ``prefix_size`` bytes.

    Raises ``ValueError`` if the length does not fit the prefix (over 255 bytes for a
    1-byte prefix, 65535 for 2 bytes, ...) or is over ``max_size`` (when given).
    """
    _check_prefix_size(prefix_size)
    size = memoryview(frame).nbytes
    if max_size is not None and size > max_size:
        raise ValueError(f"frame of {size} bytes is over max_size={max_size}")
    if size >= 1 << (8 * prefix_size):
        raise ValueError(f"frame of {size} bytes does not fit a {prefix_size}-byte prefix")
    return b"".join((size.to_bytes(prefix_size, "big"), frame))


# --- framings (decoder + encoder pairs) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Lines:
    """Newline-terminated frames: :class:`LineDecoder` plus :func:`encode_line`."""

    max_line: int = DEFAULT_MAX_LINE
    """The longest line, without its newline, in both directions."""

    def __post_init__(self) -> None:
        _check_limit("max_line", self.max_line)

    def decoder(self) -> LineDecoder:
        """Return a new :class:`LineDecoder` with this ``max_line``."""
        return LineDecoder(self.max_line)

    def encode(self, frame: Buffer) -> bytes:
        """See :func:`encode_line`; frames over ``max_line`` are a ``ValueError``."""
        return encode_line(frame, max_line=self.max_line)


@dataclass(frozen=True, slots=True)
class Delimited:
    """Delimiter-terminated frames: :class:`DelimiterDecoder` + :func:`encode_delimited`.

    ``max_bytes`` is required: no size suits every delimiter protocol.
    """

    delimiter: bytes
    """The bytes that end each frame (non-empty)."""
    max_bytes: int
    """The largest frame, without its delimiter, in both directions."""

    def __post_init__(self) -> None:
        _check_delimiter(self.delimiter)
        _check_limit("max_bytes", self.max_bytes)

    def decoder(self) -> DelimiterDecoder:
        """Return a new :class:`DelimiterDecoder` with this delimiter and limit."""
        return DelimiterDecoder(self.delimiter, self.max_bytes)

    def encode(self, frame: Buffer) -> bytes:
        """See :func:`encode_delimited`."""
        return encode_delimited(frame, self.delimiter, max_bytes=self.max_bytes)


@dataclass(frozen=True, slots=True)
class LengthPrefixed:
    """Length-prefixed frames: :class:`LengthPrefixDecoder` + :func:`encode_length_prefixed`."""

    prefix_size: PrefixSize = 4
    """Bytes of the big-endian length prefix: 1, 2, 4 or 8."""
    max_size: int = DEFAULT_MAX_FRAME_SIZE
    """The largest payload in both directions (see :data:`DEFAULT_MAX_FRAME_SIZE`)."""

    def __post_init__(self) -> None:
        _check_prefix_size(self.prefix_size)
        _check_limit("max_size", self.max_size)

    def decoder(self) -> LengthPrefixDecoder:
        """Return a new :class:`LengthPrefixDecoder` with this prefix and limit."""
        return LengthPrefixDecoder(self.prefix_size, self.max_size)

    def encode(self, frame: Buffer) -> bytes:
        """See :func:`encode_length_prefixed`."""
        return encode_length_prefixed(frame, self.prefix_size, max_size=self.max_size)


# --- argument checks ----------------------------------------------------------------


def _check_limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


def _check_delimiter(delimiter: bytes) -> bytes:
    if not isinstance(delimiter, bytes):
        raise TypeError(f"delimiter must be bytes, not {type(delimiter).__name__}")
    if not delimiter:
        raise ValueError("delimiter must not be empty")
    return delimiter


def _check_prefix_size(prefix_size: int) -> int:
    if isinstance(prefix_size, bool) or prefix_size not in _PREFIX_SIZES:
        raise ValueError(f"prefix_size must be 1, 2, 4 or 8, not {prefix_size!r}")
    return prefix_size
