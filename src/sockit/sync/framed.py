"""FramedStream: send and receive whole frames over any blocking byte stream.

A thin wrapper joining a :class:`sockit.abc.Stream` (TCP, UNIX, socketpair, TLS, memory
pair: anything with ``recv`` and ``sendall``) and a :class:`sockit.proto.framing.Framing`
(lines, delimiters, length prefixes). All the cutting into frames is the sans-I/O
decoder's; this module only moves bytes between it and the stream and maps the end of
the stream to the EOF contract of :mod:`sockit.abc`.

Must never touch a socket directly, nor call anything but ``recv``, ``sendall``,
``send_eof`` and ``close`` of the wrapped stream.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Self

from sockit.abc import HalfCloseableStream
from sockit.errors import ClosedResourceError, EndOfStream
from sockit.proto.timeouts import resolve_timeout
from sockit.sync._errors import Deadline

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from sockit.abc import Buffer, Stream
    from sockit.proto.framing import FrameDecoder, Framing

__all__ = ["FramedStream"]

# Size of each read from the wrapped stream: the same 64 KiB as the stream's own
# message helpers (sockit.sync._buffered.RECEIVE_CHUNK), the most Linux hands out per
# recv on loopback; bigger reads would only allocate more per call.
_RECEIVE_CHUNK = 65536


class FramedStream:
    """Whole frames over a byte stream: ``send_frame`` / ``recv_frame``.

    ``FramedStream(stream, LengthPrefixed(4))`` owns ``stream``: closing the framed
    stream closes it. Bytes the inner stream had already buffered (say, after a
    ``recv_line`` handshake) are read first, so a protocol may switch to frames at any
    point; once framing starts, read-ahead bytes live in the decoder, so do not read
    from the inner stream directly any more.

    Timeouts: each call takes ``timeout=`` for the whole call (``None``: the inner
    stream's default, its ``timeout`` attribute; ``math.inf``: forever). A receive that
    times out raises ``TimeoutError`` and loses nothing: the part of a frame received
    so far stays in the decoder for the next call.

    One thread may send while another receives; two concurrent receivers (or senders)
    are not supported.
    """

    __slots__ = ("_closed", "_decoder", "_framing", "_received_eof", "_stream")

    def __init__(self, stream: Stream, framing: Framing) -> None:
        self._stream = stream
        self._framing = framing
        self._decoder: FrameDecoder = framing.decoder()
        self._received_eof = False
        self._closed = False

    @property
    def stream(self) -> Stream:
        """The wrapped byte stream."""
        return self._stream

    @property
    def framing(self) -> Framing:
        """The framing used in both directions."""
        return self._framing

    @property
    def timeout(self) -> float | None:
        """The default timeout of a call: the inner stream's ``timeout`` attribute.

        ``None`` (wait forever) if the inner stream has no such attribute.
        """
        value: float | None = getattr(self._stream, "timeout", None)
        return value

    # --- sending ------------------------------------------------------------------

    def send_frame(self, frame: Buffer, *, timeout: float | None = None) -> None:
        """Send one frame with a single ``sendall`` of prefix/delimiter and payload.

        Raises ``ValueError`` before sending anything if the framing cannot carry
        ``frame`` (too large, or containing its delimiter). Otherwise the errors of
        :meth:`sockit.abc.Stream.sendall`: after a ``TimeoutError`` some, all or none of
        the frame may have been sent, so the peer's decoder may be out of step and the
        stream should be closed.
        """
        if self._closed:
            raise ClosedResourceError("send_frame on a closed FramedStream")
        data = self._framing.encode(frame)
        self._stream.sendall(data, timeout=self._call_timeout(timeout))

    def send_eof(self) -> None:
        """Half-close: tell the peer no more frames are coming (``shutdown(SHUT_WR)``).

        Idempotent, like :meth:`sockit.abc.HalfCloseableStream.send_eof`. Raises
        ``TypeError`` if the wrapped stream cannot half-close.
        """
        if self._closed:
            raise ClosedResourceError("send_eof on a closed FramedStream")
        stream = self._stream
        if not isinstance(stream, HalfCloseableStream):
            raise TypeError(f"{type(stream).__name__} cannot half-close (no send_eof)")
        stream.send_eof()

    # --- receiving ----------------------------------------------------------------

    def recv_frame(self, *, timeout: float | None = None) -> bytes:
        """Return the next frame.

        Raises :class:`~sockit.EndOfStream` if the peer sent EOF at a frame boundary
        (again on every later call), :class:`~sockit.IncompleteRead` if it sent EOF in
        the middle of a frame (``partial`` holds that frame's bytes; later calls raise
        ``EndOfStream``), :class:`~sockit.LimitExceeded` for a frame over the framing's
        limit (on every later call too: the stream cannot be resynchronised),
        ``TimeoutError`` with the partial frame kept, and the receive errors of the
        wrapped stream.
        """
        if self._closed:
            raise ClosedResourceError("recv_frame on a closed FramedStream")
        decoder = self._decoder
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        if self._received_eof:
            raise EndOfStream("the peer sent EOF: no more frames")
        deadline = Deadline(resolve_timeout(timeout, self.timeout))
        stream = self._stream
        while True:
            # One deadline for the whole frame, however many reads it takes; a read
            # with 0 s left still returns what already arrived (the frame may be
            # complete), else raises TimeoutError with the decoder keeping its state.
            remaining = deadline.remaining()
            data = stream.recv(_RECEIVE_CHUNK, timeout=math.inf if remaining is None else remaining)
            if not data:
                self._received_eof = True
                decoder.close_input()  # raises IncompleteRead mid-frame
                raise EndOfStream("the peer sent EOF at a frame boundary")
            decoder.feed(data)
            frame = decoder.next_frame()
            if frame is not None:
                return frame

    def __iter__(self) -> Iterator[bytes]:
        """Yield frames until the peer's EOF at a frame boundary.

        EOF inside a frame raises :class:`~sockit.IncompleteRead`; other errors of
        :meth:`recv_frame` propagate too. Each receive uses the default timeout.
        """
        while True:
            try:
                frame = self.recv_frame()
            except EndOfStream:
                return
            yield frame

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Close the wrapped stream and drop buffered frames. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._decoder = self._framing.decoder()
        self._stream.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<FramedStream{state} {self._framing!r} over {self._stream!r}>"

    def _call_timeout(self, timeout: float | None) -> float:
        seconds = resolve_timeout(timeout, self.timeout)
        return math.inf if seconds is None else seconds
