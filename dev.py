#!/usr/bin/env python3
"""sockit's developer commands; each one sets up what it needs, from scratch if necessary.

Usage (from any directory: every path is relative to this file, not to the shell)::

    python3 dev.py test [--slow] [pytest args...]  ruff, ruff format --check, mypy, pytest
    python3 dev.py lint                            ruff, ruff format --check, mypy
    python3 dev.py fmt                             ruff format, then ruff check --fix
    python3 dev.py demo [args...]                  sockit demo [args...]
    python3 dev.py bench [args...]                 benchmarks/run_all.py [args...]
    python3 dev.py lock [pip-compile args...]      re-pin requirements/dev.lock

Set-up (every command but ``lock``): create ``.venv`` with the running interpreter if it is
missing, install the pinned, hashed dependencies (``pip install --require-hashes -r
requirements/dev.lock``), then sockit itself (``pip install --no-deps -e .``), and record a
stamp (a hash of the lock file and pyproject.toml) inside ``.venv`` so that a re-run with
unchanged inputs installs nothing. Exit status is that of the first failing step; 2 means
the machine cannot run this script (Python too old, no ``venv``/``ensurepip``).

``lock`` needs network access to PyPI: it installs pip-tools into a throw-away
virtual environment and re-resolves requirements/dev.in plus the ``[project]`` dependencies
of pyproject.toml for the running Python, with ``--generate-hashes``.

``test`` also needs the real peers of the interop tests: HAProxy (PROXY protocol), ncat,
OpenBSD netcat and socat (ncat mode), and microsocks (a SOCKS5 proxy). When one of their
commands (``haproxy``, ``ncat``, ``nc.openbsd``, ``socat``, ``microsocks``) is not on PATH
and this runs as root on a system with ``apt-get`` (Debian, Ubuntu), it installs the
missing Debian packages (``haproxy``, ``ncat``, ``netcat-openbsd``, ``socat``,
``microsocks``) in one ``apt-get install`` (without recommends, ``apt-get update`` only if
the first attempt fails). A failed attempt is remembered in ``.venv`` and not repeated for
the same set of packages; elsewhere it prints a warning, and those tests skip (or fail,
when the environment variable ``CI`` is set).

This script must use the standard library only (it runs before any dependency exists), and
must never delete a ``.venv`` it did not create in the same run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_BIN = VENV / "bin"
VENV_PYTHON = VENV_BIN / "python"
LOCK_FILE = ROOT / "requirements" / "dev.lock"
LOCK_INPUT = ROOT / "requirements" / "dev.in"
PYPROJECT = ROOT / "pyproject.toml"
STAMP = VENV / "sockit-dev.stamp"
# Written when installing the system packages failed, so every later run does not wait for
# apt again (offline machine, broken mirror); it names the packages of that attempt, so a
# different set of missing packages is tried again. Delete it to retry.
PEERS_FAILED_STAMP = VENV / "sockit-peers.failed"
# The interop tests' peers: the command each test looks for on PATH, and the Debian package
# that provides it (Debian names the OpenBSD netcat's command nc.openbsd: plain `nc` is an
# alternative that ncat or netcat-openbsd may own).
TEST_PEERS: tuple[tuple[str, str], ...] = (
    ("haproxy", "haproxy"),
    ("ncat", "ncat"),
    ("nc.openbsd", "netcat-openbsd"),
    ("socat", "socat"),
    ("microsocks", "microsocks"),
)

# Bump when the install recipe below changes, so existing environments are re-installed.
SETUP_RECIPE_VERSION = b"1"
MIN_PYTHON = (3, 11)
# pytest's exit status when it selected no tests: a typo in -k or a missing tests/ directory
# must not look like a green run.
PYTEST_NO_TESTS_COLLECTED = 5

# The lock must carry the hashes PyPI publishes, so it verifies on every machine; a local
# index or wheel directory in the user's pip configuration would add hashes of locally
# built files. `lock` therefore ignores pip configuration (PIP_CONFIG_FILE=/dev/null), so
# pip uses its built-in default index, PyPI, and nothing else.
PIP_TOOLS_REQUIREMENT = "pip-tools>=7.4"

ENSUREPIP_MISSING = (
    "dev.py: `python3 -m venv` cannot install pip here (ensurepip is missing); "
    "on Debian/Ubuntu run `sudo apt install python3-venv` (or python3.X-venv), then retry"
)


class DevError(Exception):
    """A set-up problem with a one-line explanation and the exit status to leave with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def say(message: str) -> None:
    """Print a progress line, flushed so it lands before the output of the next child."""
    print(message, file=sys.stderr, flush=True)


def tool_environment() -> dict[str, str]:
    """The environment of every child: the virtual environment first on PATH."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", os.defpath)])
    return env


def run(argv: Sequence[str | os.PathLike[str]], *, env: dict[str, str] | None = None) -> int:
    """Run a child in the repository root and return its exit status (never raises)."""
    try:
        completed = subprocess.run(argv, cwd=ROOT, env=env, check=False)
    except FileNotFoundError:
        say(f"dev.py: {argv[0]} not found")
        return 127
    return completed.returncode


@contextlib.contextmanager
def setup_lock() -> Iterator[None]:
    """Serialise set-up between concurrent dev.py runs on the same checkout.

    The lock is taken on this script itself, so it needs no extra file in the tree.
    """
    with (ROOT / "dev.py").open("rb") as script:
        fcntl.flock(script.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(script.fileno(), fcntl.LOCK_UN)


def check_python() -> None:
    """Refuse interpreters older than the project supports."""
    if sys.version_info < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        wanted = ".".join(map(str, MIN_PYTHON))
        raise DevError(f"dev.py: sockit needs Python >= {wanted}, this is {found}", 2)


def create_venv(path: Path) -> None:
    """Create a virtual environment with pip at ``path``, which must not exist yet.

    On failure nothing is left behind, so the next run starts clean.
    """
    if importlib.util.find_spec("ensurepip") is None:
        raise DevError(ENSUREPIP_MISSING, 2)
    say(f"dev.py: creating {path} with {sys.executable}")
    completed = subprocess.run(
        [sys.executable, "-m", "venv", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0 or not (path / "bin" / "python").exists():
        shutil.rmtree(path, ignore_errors=True)
        output = completed.stdout + completed.stderr
        # Debian and Ubuntu split ensurepip into the python3-venv package; venv then fails
        # after creating the directory, with a long message naming ensurepip.
        if "ensurepip" in output:
            raise DevError(ENSUREPIP_MISSING, 2)
        sys.stderr.write(output)
        raise DevError(f"dev.py: `{sys.executable} -m venv {path}` failed", 2)


def input_digest() -> str:
    """Hash of everything the installed environment depends on."""
    digest = hashlib.sha256()
    for part in (SETUP_RECIPE_VERSION, LOCK_FILE.read_bytes(), PYPROJECT.read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def pip_install(*args: str | os.PathLike[str]) -> int:
    """``pip install`` into the development environment, never prompting."""
    return run(
        [
            VENV_PYTHON,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-input",
            "--disable-pip-version-check",
            *args,
        ]
    )


def setup() -> None:
    """Make .venv match requirements/dev.lock and pyproject.toml; a no-op when it does."""
    check_python()
    if not LOCK_FILE.is_file():
        raise DevError(f"dev.py: {LOCK_FILE} is missing; run `python3 dev.py lock`", 2)
    with setup_lock():
        if not VENV_PYTHON.exists():
            if VENV.exists():
                raise DevError(
                    f"dev.py: {VENV} exists but {VENV_PYTHON} does not run "
                    "(made by another Python?); remove the directory and retry",
                    2,
                )
            create_venv(VENV)
        wanted = input_digest()
        with contextlib.suppress(FileNotFoundError):
            if STAMP.read_text(encoding="ascii").strip() == wanted:
                return
        # Forget the old stamp first: an interrupted install must not look complete.
        STAMP.unlink(missing_ok=True)
        say("dev.py: installing requirements/dev.lock into .venv")
        status = pip_install("--require-hashes", "-r", LOCK_FILE)
        if status != 0:
            raise DevError("dev.py: installing requirements/dev.lock failed (see above)", status)
        say("dev.py: installing sockit (editable) into .venv")
        # No build isolation: the build backend comes hashed from the lock file instead of
        # being fetched, unverified, into a temporary build environment.
        status = pip_install("--no-deps", "--no-build-isolation", "--editable", ROOT)
        if status != 0:
            raise DevError("dev.py: installing sockit into .venv failed (see above)", status)
        partial = STAMP.with_name(STAMP.name + ".tmp")
        partial.write_text(wanted + "\n", encoding="ascii")
        partial.replace(STAMP)


def apt_get(apt: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``apt-get`` quietly and non-interactively; its output is kept for errors."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        [apt, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def missing_test_peers() -> list[str]:
    """The Debian packages of :data:`TEST_PEERS` whose command is not on PATH."""
    return [package for command, package in TEST_PEERS if shutil.which(command) is None]


def ensure_test_peers() -> None:
    """Install the interop tests' peers (:data:`TEST_PEERS`) that are missing, if allowed.

    One ``apt-get install`` for all missing packages. Prints one line when it acts or
    cannot; never fails the command: without a peer its interop tests skip (or fail under
    CI) and say why.
    """
    missing = missing_test_peers()
    if not missing:
        return
    names = " ".join(missing)
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        needs = "apt-get" if apt is None else "root"
        say(
            f"dev.py: warning: {names} not installed and installing needs {needs}; "
            "their interop tests will skip (fail under CI)"
        )
        return
    attempt = f"packages: {names}\n"
    with contextlib.suppress(FileNotFoundError):
        if PEERS_FAILED_STAMP.read_text(encoding="ascii").startswith(attempt):
            say(
                f"dev.py: warning: {names} not installed; installing failed before "
                f"(delete {PEERS_FAILED_STAMP.relative_to(ROOT)} to retry)"
            )
            return
    say(f"dev.py: installing {names} with apt-get (interop test peers)")
    install = ("install", "-y", "-qq", "--no-install-recommends", *missing)
    completed = apt_get(apt, *install)
    if completed.returncode != 0:
        # Fresh images ship without package lists; refresh them only when needed.
        updated = apt_get(apt, "update", "-qq")
        completed = updated if updated.returncode != 0 else apt_get(apt, *install)
    still_missing = missing_test_peers()
    if completed.returncode != 0 or still_missing:
        sys.stderr.write(completed.stdout + completed.stderr)
        PEERS_FAILED_STAMP.write_text(
            f"{attempt}apt-get exited with status {completed.returncode}\n", encoding="ascii"
        )
        say(
            f"dev.py: warning: installing {' '.join(still_missing) or names} failed "
            "(see above); their interop tests will skip (fail under CI)"
        )
        return
    PEERS_FAILED_STAMP.unlink(missing_ok=True)


def run_steps(steps: Sequence[tuple[str, Sequence[str | os.PathLike[str]]]]) -> int:
    """Run steps in order with a header line each; stop at the first failure."""
    env = tool_environment()
    for number, (title, argv) in enumerate(steps, start=1):
        print(f"==> [{number}/{len(steps)}] {title}", flush=True)
        status = run(argv, env=env)
        if status != 0:
            hint = ""
            if title.startswith("pytest") and status == PYTEST_NO_TESTS_COLLECTED:
                hint = " (no tests collected, which counts as a failure)"
            say(f"dev.py: FAILED: {title} exited with status {status}{hint}")
            return status
    return 0


def lint_steps() -> list[tuple[str, Sequence[str | os.PathLike[str]]]]:
    """The static checks, configured in pyproject.toml."""
    return [
        ("ruff check .", [VENV_BIN / "ruff", "check", "."]),
        ("ruff format --check .", [VENV_BIN / "ruff", "format", "--check", "."]),
        ("mypy", [VENV_BIN / "mypy"]),
    ]


def command_test(args: list[str]) -> int:
    """Lint, type-check, then pytest; ``--slow`` selects only the slow tests."""
    slow = "--slow" in args
    pytest_args = [arg for arg in args if arg != "--slow"]
    marker = "slow" if slow else "not slow"
    setup()
    with setup_lock():
        ensure_test_peers()
    steps = lint_steps()
    steps.append((f'pytest -m "{marker}"', [VENV_BIN / "pytest", "-m", marker, *pytest_args]))
    return run_steps(steps)


def command_lint(args: list[str]) -> int:
    """Ruff (lint and format check) and mypy."""
    if args:
        raise DevError("dev.py: lint takes no arguments", 2)
    setup()
    return run_steps(lint_steps())


def command_fmt(args: list[str]) -> int:
    """Reformat, then apply ruff's safe fixes."""
    if args:
        raise DevError("dev.py: fmt takes no arguments", 2)
    setup()
    return run_steps(
        [
            ("ruff format .", [VENV_BIN / "ruff", "format", "."]),
            ("ruff check --fix .", [VENV_BIN / "ruff", "check", "--fix", "."]),
        ]
    )


def command_demo(args: list[str]) -> int:
    """Replace this process with ``sockit demo [args...]``."""
    setup()
    program = VENV_BIN / "sockit"
    if not program.exists():
        raise DevError(f"dev.py: {program} is missing; check [project.scripts]", 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(program, [str(program), "demo", *args], tool_environment())


def command_bench(args: list[str]) -> int:
    """Run benchmarks/run_all.py, or else every benchmarks/*.py script in name order."""
    setup()
    benchmarks = ROOT / "benchmarks"
    run_all = benchmarks / "run_all.py"
    if run_all.is_file():
        return run_steps([(f"{run_all.relative_to(ROOT)}", [VENV_PYTHON, run_all, *args])])
    scripts = sorted(
        path for path in benchmarks.glob("*.py") if not path.name.startswith(("_", "test_"))
    )
    if not scripts:
        raise DevError(f"dev.py: no benchmark scripts in {benchmarks}", 1)
    return run_steps(
        [(f"{script.relative_to(ROOT)}", [VENV_PYTHON, script, *args]) for script in scripts]
    )


def lock_environment() -> dict[str, str]:
    """Environment for pip and pip-compile during ``lock``: PyPI only, no user pip config."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    # Keep a CA bundle the machine needs to reach PyPI through a TLS-inspecting proxy.
    for name in ("PIP_CERT", "PIP_CLIENT_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # pip-compile writes this into the header of the lock file as the way to regenerate it.
    env["CUSTOM_COMPILE_COMMAND"] = "python3 dev.py lock"
    return env


def command_lock(args: list[str]) -> int:
    """Re-pin requirements/dev.lock with hashes from PyPI (needs network access to PyPI)."""
    check_python()
    env = lock_environment()
    with tempfile.TemporaryDirectory(prefix="sockit-lock-") as scratch:
        tools = Path(scratch) / "venv"
        create_venv(tools)
        say(f"dev.py: installing {PIP_TOOLS_REQUIREMENT} from PyPI")
        python = tools / "bin" / "python"
        status = run([python, "-m", "pip", "install", "--quiet", PIP_TOOLS_REQUIREMENT], env=env)
        if status != 0:
            raise DevError("dev.py: installing pip-tools failed; `lock` needs PyPI", status)
        say(f"dev.py: resolving {LOCK_INPUT.relative_to(ROOT)} + pyproject.toml")
        status = run(
            [
                tools / "bin" / "pip-compile",
                "--quiet",
                "--generate-hashes",
                # setuptools is the build backend sockit is installed with; pin it too.
                "--allow-unsafe",
                "--strip-extras",
                "--no-emit-index-url",
                "--no-emit-find-links",
                "--output-file",
                str(LOCK_FILE.relative_to(ROOT)),
                *args,
                "pyproject.toml",
                str(LOCK_INPUT.relative_to(ROOT)),
            ],
            env=env,
        )
    if status != 0:
        raise DevError("dev.py: pip-compile failed (see above)", status)
    say(f"dev.py: wrote {LOCK_FILE.relative_to(ROOT)}; the next command installs it")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "test": command_test,
    "lint": command_lint,
    "fmt": command_fmt,
    "demo": command_demo,
    "bench": command_bench,
    "lock": command_lock,
}


def main(argv: list[str]) -> int:
    """Dispatch ``argv[0]`` to its command; print usage for anything else."""
    usage = __doc__.split("Set-up", 1)[0].rstrip() if __doc__ else "usage: dev.py COMMAND"
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        say(f"dev.py: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)}")
        return 2
    try:
        return command(argv[1:])
    except DevError as error:
        say(str(error))
        return error.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
