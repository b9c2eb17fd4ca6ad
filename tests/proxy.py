"""A TCP proxy in front of PostgreSQL that a test can cut and restore (a database outage), slow
down (latency on every forwarded chunk) or black-hole (sockets stay open, nothing moves: a
half-open connection, as after a failover or a NAT timeout)."""

from __future__ import annotations

import select
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._up = True
        self._closed = False
        self._frozen = False  # black hole: keep the sockets, forward nothing
        self.latency = 0.0  # seconds added before forwarding each chunk
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                client.close()  # the "database" refuses connections while cut
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        try:
            while True:
                with self._lock:
                    frozen = self._frozen
                if frozen:
                    time.sleep(0.05)
                    if self._closed or not self._up:
                        return
                    continue
                readable, _, _ = select.select(socks, [], [], 0.5)
                with self._lock:
                    if not self._up or self._closed:
                        return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    if self.latency > 0:
                        time.sleep(self.latency)
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        with self._lock:
            self._up = False
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    continue  # already closed by the pump thread

    def restore(self) -> None:
        """Accept and forward again (after ``cut`` or ``blackhole``), with no added latency."""
        with self._lock:
            self._up = True
            self._frozen = False
        self.latency = 0.0

    def blackhole(self) -> None:
        """Stop forwarding without closing anything: every open and new connection hangs
        (a TCP peer that vanished) until ``restore``."""
        with self._lock:
            self._frozen = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()
