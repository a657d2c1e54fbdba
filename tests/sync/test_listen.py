"""listen() / listen_unix(): dual stack on one port, real addresses, UNIX file rules."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import uuid
from pathlib import Path

import pytest

import sockit


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")


@needs_ipv6
def test_listen_port_zero_no_host_shares_one_port_between_families() -> None:
    with sockit.listen(0) as listener:
        addresses = listener.addresses
        families = {address.family for address in addresses}
        assert families == {socket.AF_INET, socket.AF_INET6}
        assert {address.port for address in addresses} == {listener.port}
        assert listener.port != 0
        assert {address.host for address in addresses} == {"0.0.0.0", "::"}


@needs_ipv6
def test_ipv4_client_appears_as_ipv4_and_ipv6_as_ipv6() -> None:
    with sockit.listen(0) as listener:
        with sockit.connect("127.0.0.1", listener.port) as client4:
            with listener.accept(timeout=5) as server4:
                assert server4.remote_address.family == socket.AF_INET
                assert server4.remote_address.host == "127.0.0.1"
                assert server4.remote_address == client4.local_address
                assert str(server4.local_address) == f"127.0.0.1:{listener.port}"
        with sockit.connect("::1", listener.port) as client6:
            with listener.accept(timeout=5) as server6:
                assert server6.remote_address.family == socket.AF_INET6
                assert server6.remote_address == client6.local_address


def test_listen_on_host_reports_real_port() -> None:
    with sockit.listen(0, "127.0.0.1") as listener:
        (address,) = listener.addresses
        assert address.host == "127.0.0.1"
        assert address.port == listener.port > 0
        assert str(address) == f"127.0.0.1:{listener.port}"


def test_listen_explicit_port_in_use_names_the_address() -> None:
    with sockit.listen(0, "127.0.0.1") as first:
        with pytest.raises(OSError) as caught:
            sockit.listen(first.port, "127.0.0.1")
        assert caught.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1:{first.port}" in str(caught.value)


def test_listen_rejects_bad_port_before_lookup() -> None:
    for port in (65536, -1, "99999", "nope-not-a-service"):
        with pytest.raises(sockit.AddressError):
            sockit.listen(port)


def test_default_backlog_is_not_five() -> None:
    # 600 connects without accepting: a backlog of 5 would drop SYNs and stall them.
    with sockit.listen(0, "127.0.0.1") as listener:
        clients = []
        try:
            for _ in range(600):
                client = socket.socket()
                clients.append(client)
                client.settimeout(5)
                client.connect(("127.0.0.1", listener.port))
        finally:
            for client in clients:
                client.close()


def test_accept_timeout_and_close() -> None:
    listener = sockit.listen(0, "127.0.0.1")
    with pytest.raises(TimeoutError):
        listener.accept(timeout=0.05)
    listener.close()
    listener.close()  # idempotent
    with pytest.raises(sockit.ClosedResourceError):
        listener.accept(timeout=0.05)


def test_accept_from_many_threads_concurrently() -> None:
    with sockit.listen(0, "127.0.0.1") as listener:
        received: list[bytes] = []
        lock = threading.Lock()

        def client(index: int) -> None:
            with sockit.connect("127.0.0.1", listener.port, timeout=5) as stream:
                stream.sendall(b"%d\n" % index)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for _ in range(20):
            with listener.accept(timeout=5) as stream:
                line = stream.recv_line(timeout=5)
                with lock:
                    received.append(line)
        for thread in threads:
            thread.join(5)
        assert sorted(received, key=int) == [b"%d" % i for i in range(20)]


def test_accepted_and_connected_streams_have_nodelay() -> None:
    with sockit.listen(0, "127.0.0.1") as listener:
        with sockit.connect("127.0.0.1", listener.port) as client:
            with listener.accept(timeout=5) as server:
                for stream in (client, server):
                    assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# --- UNIX ------------------------------------------------------------------------------


def test_unix_listen_connect_and_cleanup(tmp_path: Path) -> None:
    path = str(tmp_path / "server.sock")
    with sockit.listen_unix(path) as listener:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert str(listener.addresses[0]) == f"unix:{path}"
        with sockit.connect_unix(path) as client, listener.accept(timeout=5) as server:
            client.sendall(b"hi")
            client.send_eof()
            assert server.recv_exactly(2) == b"hi"
            assert server.recv() == b""
            assert str(client.remote_address) == f"unix:{path}"
    assert not os.path.exists(path)


def test_unix_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays behind: nobody listens on it any more
    assert os.path.exists(path)
    with sockit.listen_unix(path) as listener:
        with sockit.connect_unix(path) as client, listener.accept(timeout=5) as server:
            client.sendall(b"x")
            assert server.recv() == b"x"
    assert not os.path.exists(path)


def test_unix_live_socket_is_not_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "live.sock")
    with sockit.listen_unix(path):
        with pytest.raises(OSError) as caught:
            sockit.listen_unix(path)
        assert caught.value.errno == errno.EADDRINUSE
        assert os.path.exists(path)


def test_unix_regular_file_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_bytes(b"keep me")
    with pytest.raises(OSError):
        sockit.listen_unix(str(path))
    assert path.read_bytes() == b"keep me"


def test_unix_mode_is_applied(tmp_path: Path) -> None:
    path = str(tmp_path / "private.sock")
    with sockit.listen_unix(path, mode=0o600):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unix_abstract_name() -> None:
    name = f"@sockit-test-{os.getpid()}-{uuid.uuid4().hex}"
    with sockit.listen_unix(name) as listener:
        assert str(listener.addresses[0]) == name
        with sockit.connect_unix(name) as client, listener.accept(timeout=5) as server:
            server.sendall(b"abstract")
            server.send_eof()
            assert client.recv_until(b"t", max_bytes=100) == b"abs"
            assert client.recv() == b"ract"


def test_connect_unix_missing_and_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sockit.connect_unix(str(tmp_path / "missing.sock"))
    path = str(tmp_path / "dead.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()
    with pytest.raises(ConnectionRefusedError):
        sockit.connect_unix(path)
