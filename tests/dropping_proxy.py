"""A TCP proxy in front of PostgreSQL that loses one reply: the reply to the first COMMIT after
a statement that matches ``after``. The server has committed; the client sees its connection
drop, as it would when a network or a load balancer fails at just that moment."""
from __future__ import annotations

import socket
import threading


class DroppingProxy:
    def __init__(self, target: tuple[str, int], after: bytes, drops: int = 1):
        self.target, self.after, self.drops = target, after, drops
        self.dropped = self.unanswered = 0    # unanswered: a COMMIT whose reply never came
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            state = {"armed": False, "swallow": False, "answered": threading.Event()}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        """Client to server: after the matching statement, the COMMIT goes through and the
        connection is then cut before its answer comes back."""
        try:
            while data := client.recv(65536):
                state["armed"] = state["armed"] or self.after in data
                cut = False
                if state["armed"] and b"COMMIT" in data:
                    with self._lock:
                        cut = self.dropped < self.drops
                        self.dropped += cut
                    state["armed"] = False
                if cut:
                    state["swallow"] = True
                    server.sendall(data)
                    if not state["answered"].wait(60):  # the server commits and answers
                        self.unanswered += 1
                    break
                server.sendall(data)
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        try:
            while data := server.recv(65536):
                if not state["swallow"]:
                    client.sendall(data)
                else:
                    state["answered"].set()             # the COMMIT's reply, never passed on
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()
