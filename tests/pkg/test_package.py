"""The top-level package: every public name resolves, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sockit


def test_every_public_name_resolves() -> None:
    for name in sockit.__all__:
        assert getattr(sockit, name) is not None, name
    assert set(sockit.__all__) <= set(dir(sockit))


def test_unknown_attribute_is_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = sockit.no_such_name  # type: ignore[attr-defined]


def test_import_sockit_loads_no_socket_code() -> None:
    # `sockit --version` and `import sockit` must not pay for the socket layers.
    code = (
        "import sys, sockit\n"
        "heavy = [m for m in ('sockit.sync', 'sockit.addr', 'socket', 'dataclasses', 'idna')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == ""


def test_version_command_imports_almost_nothing() -> None:
    code = (
        "import sys\n"
        "from sockit.cli.main import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(','.join(m for m in ('sockit.sync', 'socket') if m in sys.modules),"
        " file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.startswith("sockit ")
    assert result.stderr.strip() == ""


def test_sockit_serve_is_callable_as_design_md_spells_it() -> None:
    # Importing a submodule binds the package to sockit.serve, as any import would; the
    # call still works (the package forwards calls to serve()).
    from sockit.serve.server import Server  # noqa: PLC0415

    def hello(stream: sockit.SocketStream) -> None:
        stream.sendall(b"hello\n")

    with sockit.serve(hello, 0, "127.0.0.1") as server:
        assert isinstance(server, Server)
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            assert client.recv_line(timeout=5) == b"hello"
