"""resolve_timeout (sockit.proto.timeouts): the one meaning of ``timeout=`` for both twins."""

from __future__ import annotations

import math

import pytest

from sockit.proto.timeouts import resolve_timeout


@pytest.mark.parametrize(
    ("timeout", "default", "expected"),
    [
        pytest.param(None, None, None, id="no-timeout-no-default"),
        pytest.param(None, 2.5, 2.5, id="default-applies"),
        pytest.param(1.0, 2.5, 1.0, id="call-wins-over-default"),
        pytest.param(0, None, 0.0, id="zero-is-a-deadline"),
        pytest.param(3, None, 3.0, id="int-becomes-float"),
        pytest.param(math.inf, None, None, id="inf-is-forever"),
        pytest.param(math.inf, 2.5, None, id="inf-overrides-default"),
        pytest.param(None, math.inf, None, id="inf-default-is-forever"),
    ],
)
def test_resolved(timeout: float | None, default: float | None, expected: float | None) -> None:
    result = resolve_timeout(timeout, default)
    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize(
    ("timeout", "default"),
    [
        pytest.param(-0.001, None, id="negative"),
        pytest.param(math.nan, None, id="nan"),
        pytest.param(-math.inf, None, id="minus-inf"),
        pytest.param(None, -1.0, id="negative-default"),
        pytest.param(None, math.nan, id="nan-default"),
    ],
)
def test_rejected(timeout: float | None, default: float | None) -> None:
    with pytest.raises(ValueError, match="timeout must be >= 0 or None"):
        resolve_timeout(timeout, default)


def test_a_bad_default_is_not_checked_when_the_call_gives_a_timeout() -> None:
    # The rule is about the value that applies; the object's default is checked when set.
    assert resolve_timeout(1.0, -1.0) == 1.0
