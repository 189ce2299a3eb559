"""Small network helpers shared by the harness modules."""

from __future__ import annotations

import socket
import threading
import time

_GIVEN: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it), never one this process was
    given before: the OS hands a just-closed port out again, and two calls for one server's
    ports (api, metrics, p2p) then collided."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no fresh free port in 100 tries")


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


class CuttingProxy:
    """A TCP proxy in front of a test server (S3): an outage on demand. After ``cut_after``
    bytes from clients it resets every connection and refuses new ones until ``restore()``.
    Listens on ``host`` (loopback, or the real node's bridge address for pods)."""

    def __init__(
        self,
        target_port: int,
        cut_after: int,
        host: str = "127.0.0.1",
        rate: float | None = None,
    ) -> None:
        self.cut_after = cut_after
        self.rate = rate  # bytes per second from clients (per connection), None: unlimited
        self.forwarded = 0
        self.down = threading.Event()
        self._target = (host, target_port)
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if counted:
                    with self._lock:
                        self.forwarded += len(data)
                        if self.forwarded >= self.cut_after:
                            self.down.set()
                if self.down.is_set():
                    break
                if counted and self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        if self.down.is_set():
            self._reset_all()

    def _reset_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                conn.close()
            except OSError:
                pass

    def cut_in(self, more: int) -> None:
        """Cut after ``more`` further bytes from clients."""
        with self._lock:
            self.cut_after = self.forwarded + more

    def restore(self) -> None:
        with self._lock:
            self.cut_after = 2**62
        self.down.clear()

    def close(self) -> None:
        self._listener.close()
        self._reset_all()
