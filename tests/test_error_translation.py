"""translate_os_error (sockit.errors): who is at fault, decided once for both twins.

A table of kernel and transport errors and what each becomes, then the raising side of
the sync twin (``sockit.sync._errors.raise_translated``) on the same table: the
original error is always the ``__cause__``, and an unknown errno goes up unchanged.
"""

from __future__ import annotations

import errno
import os

import pytest

from sockit.errors import (
    BrokenResourceError,
    ClosedResourceError,
    ConnectionResetByPeer,
    PeerClosedError,
    translate_os_error,
)
from sockit.sync._errors import raise_translated


def _os_error(code: int) -> OSError:
    # OSError(code, text) builds the built-in subclass the kernel's errno maps to.
    return OSError(code, os.strerror(code))


CASES = [
    # (error, closed, expected class, expected errno, text in the message)
    pytest.param(
        TimeoutError("timed out"), False, TimeoutError, None, "recv timed out", id="timeout"
    ),
    pytest.param(
        TimeoutError("x"), True, TimeoutError, None, "recv timed out", id="timeout-closed"
    ),
    pytest.param(
        BlockingIOError(errno.EAGAIN, "again"),
        False,
        TimeoutError,
        None,
        "(timeout=0)",
        id="eagain",
    ),
    pytest.param(
        _os_error(errno.EBADF), False, ClosedResourceError, errno.EBADF, "closed", id="ebadf"
    ),
    pytest.param(
        _os_error(errno.ENOTSOCK), False, ClosedResourceError, errno.EBADF, "closed", id="enotsock"
    ),
    pytest.param(
        _os_error(errno.ECONNRESET),
        True,
        ClosedResourceError,
        errno.EBADF,
        "closed",
        id="closed-wins",
    ),
    pytest.param(
        _os_error(errno.ECONNRESET),
        False,
        ConnectionResetByPeer,
        errno.ECONNRESET,
        "reset",
        id="reset",
    ),
    pytest.param(
        ConnectionResetError("made up"),
        False,
        ConnectionResetByPeer,
        errno.ECONNRESET,
        "reset",
        id="reset-without-errno",
    ),
    pytest.param(
        _os_error(errno.EPIPE), False, PeerClosedError, errno.EPIPE, "peer closed", id="epipe"
    ),
    pytest.param(
        BrokenPipeError("made up"),
        False,
        PeerClosedError,
        errno.EPIPE,
        "peer closed",
        id="epipe-without-errno",
    ),
    *(
        pytest.param(
            _os_error(code),
            False,
            BrokenResourceError,
            code,
            os.strerror(code),
            id=errno.errorcode[code].lower(),
        )
        for code in (
            errno.ECONNABORTED,
            errno.ENOTCONN,
            errno.ETIMEDOUT,
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.ENETDOWN,
            errno.EHOSTDOWN,
            errno.ESHUTDOWN,
        )
    ),
    pytest.param(
        RuntimeError("transport hiccup"),
        False,
        BrokenResourceError,
        None,
        "transport hiccup",
        id="not-an-oserror",
    ),
    pytest.param(
        RuntimeError("transport hiccup"),
        True,
        ClosedResourceError,
        errno.EBADF,
        "closed",
        id="not-an-oserror-closed",
    ),
]


@pytest.mark.parametrize(("error", "closed", "expected", "code", "text"), CASES)
def test_translation(
    error: BaseException, closed: bool, expected: type[BaseException], code: int | None, text: str
) -> None:
    translated = translate_os_error(error, closed=closed, operation="recv")
    assert type(translated) is expected
    assert translated is not error
    if isinstance(translated, OSError):
        assert translated.errno == code
    assert text in str(translated)
    if not isinstance(translated, TimeoutError):
        assert "recv" in str(translated)


def test_broken_and_reset_keep_their_builtin_bases() -> None:
    reset = translate_os_error(_os_error(errno.ECONNRESET), closed=False, operation="recv")
    assert isinstance(reset, ConnectionResetError)
    assert isinstance(reset, BrokenResourceError)
    pipe = translate_os_error(_os_error(errno.EPIPE), closed=False, operation="send")
    assert isinstance(pipe, BrokenPipeError)
    # ETIMEDOUT from a receive is TCP giving up, not a deadline of the caller.
    gave_up = translate_os_error(_os_error(errno.ETIMEDOUT), closed=False, operation="recv")
    assert not isinstance(gave_up, TimeoutError)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EMSGSIZE, errno.ECONNREFUSED, errno.EACCES])
def test_other_errnos_come_back_unchanged(code: int) -> None:
    error = _os_error(code)
    assert translate_os_error(error, closed=False, operation="send") is error


# The sync layer only ever sees OSError.
SYNC_CASES = [case for case in CASES if isinstance(case.values[0], OSError)]


@pytest.mark.parametrize(("error", "closed", "expected", "code", "text"), SYNC_CASES)
def test_the_sync_twin_raises_the_translation_chained(
    error: BaseException, closed: bool, expected: type[BaseException], code: int | None, text: str
) -> None:
    assert isinstance(error, OSError)
    with pytest.raises(expected) as caught:
        raise_translated(error, closed=closed, operation="recv")
    assert caught.value.__cause__ is error
    assert text in str(caught.value)


def test_the_sync_twin_reraises_an_unknown_errno_as_it_is() -> None:
    error = _os_error(errno.EINVAL)
    with pytest.raises(OSError) as caught:
        raise_translated(error, closed=False, operation="send")
    assert caught.value is error
