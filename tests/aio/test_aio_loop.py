"""sockit.aio's loop choice: uvloop by default, SOCKIT_LOOP=asyncio forces the stdlib loop,
and importing sockit.aio never imports uvloop."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from sockit import aio
from sockit.aio import _loop

uvloop = pytest.importorskip("uvloop")


def test_default_is_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCKIT_LOOP", raising=False)
    loop = aio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert aio.loop_name(loop) == "uvloop"
    finally:
        loop.close()
    assert aio.loop_name() == "uvloop"


@pytest.mark.parametrize("value", ["asyncio", "ASYNCIO", " asyncio "])
def test_environment_forces_the_stdlib_loop(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOCKIT_LOOP", value)
    loop = aio.new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert not isinstance(loop, uvloop.Loop)
        assert aio.loop_name(loop) == "asyncio"
    finally:
        loop.close()
    assert aio.loop_name() == "asyncio"


@pytest.mark.parametrize("value", ["uvloop", "auto", ""])
def test_environment_uvloop_and_auto(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOCKIT_LOOP", value)
    loop = aio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_unknown_environment_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKIT_LOOP", "trio")
    with pytest.raises(ValueError, match="SOCKIT_LOOP"):
        aio.new_event_loop()


def test_uvloop_requested_but_missing_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKIT_LOOP", "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    with pytest.raises(ImportError):
        aio.new_event_loop()


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCKIT_LOOP", raising=False)
    monkeypatch.setattr(_loop, "_uvloop_available", lambda: False)
    loop = aio.new_event_loop()
    try:
        assert aio.loop_name(loop) == "asyncio"
    finally:
        loop.close()


@pytest.mark.parametrize(("value", "expected"), [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_run_uses_the_selected_loop_and_closes_it(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("SOCKIT_LOOP", value)
    seen: list[asyncio.AbstractEventLoop] = []

    async def main() -> str:
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return aio.loop_name()

    assert aio.run(main()) == expected
    assert seen[0].is_closed()


def test_run_propagates_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKIT_LOOP", "asyncio")

    async def main() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        aio.run(main())


def test_a_foreign_loop_is_named_by_its_class() -> None:
    class OtherLoop(asyncio.SelectorEventLoop):
        pass

    OtherLoop.__module__ = "elsewhere.loops"
    loop = OtherLoop()
    try:
        assert (
            aio.loop_name(loop)
            == "elsewhere.loops.test_a_foreign_loop_is_named_by_its_class.<locals>.OtherLoop"
        )
    finally:
        loop.close()


def test_importing_sockit_aio_does_not_import_uvloop() -> None:
    code = "import sys, sockit.aio; print('uvloop' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout.strip() == "False"
