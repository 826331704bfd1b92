"""A TCP relay that records how every connection through it begins, for the TLS tests.

kotel is pointed at the tap, the tap forwards each connection to the real receiver byte for
byte, and it keeps the first bytes the client sent on each connection. A TLS connection
starts with a handshake record (byte 0x16); plaintext HTTP/2 starts with ``PRI * HTTP/2.0``
and HTTP/1.1 with a method name. So "every connection began with 0x16" proves that nothing
was sent in plaintext, whatever happened to the handshake afterwards.
"""

from __future__ import annotations

import socket
import threading

#: The first byte of a TLS record carrying a handshake message (a ClientHello, here).
TLS_HANDSHAKE = 0x16


class TcpTap:
    """Listens on 127.0.0.1 (a port chosen by the kernel) and relays to ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._first: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def first_bytes(self) -> list[bytes]:
        """The first bytes (up to 16) the client sent on each connection that sent any."""
        with self._lock:
            return list(self._first)

    def all_tls(self) -> bool:
        """Whether at least one connection carried data and every one began as TLS."""
        first = self.first_bytes()
        return bool(first) and all(b[0] == TLS_HANDSHAKE for b in first)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        recorded = threading.Event()

        def pump(src: socket.socket, dst: socket.socket, record: bool) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if record and not recorded.is_set():
                        recorded.set()
                        with self._lock:
                            self._first.append(data[:16])
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(upstream, client, False), daemon=True)
        back.start()
        pump(client, upstream, True)
        back.join(timeout=5)
        client.close()
        upstream.close()
