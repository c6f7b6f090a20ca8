"""Free TCP ports for Envoy listeners in tests.

Envoy listeners need a port chosen *before* the config is sent, so port 0 does not work for them.
Ports at or above 32768 fall in Linux's ephemeral range and can collide with the source port of
some unrelated outgoing connection (seen as spurious LDS NACKs: "address already in use"); so we
probe randomly in 20000-31999, well below it.
"""

from __future__ import annotations

import random
import socket
import threading

LOW_PORT = 20000
HIGH_PORT = 32000  # exclusive; stays below the default ephemeral range (32768-60999)

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1", *, attempts: int = 200) -> int:
    """Return a TCP port in [20000, 32000) on which `host` could be bound just now.

    The port is probed by binding (without SO_REUSEADDR) and closing a socket; it is free at that
    instant, not reserved, so bind it soon. Within one process a port is never handed out twice,
    and the random choice makes collisions between parallel test processes unlikely.
    Raises `RuntimeError` if no free port was found in `attempts` tries.
    """
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randrange(LOW_PORT, HIGH_PORT)
        with _lock:
            if port in _handed_out:
                continue
            if _can_bind(host, port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port on {host} in [{LOW_PORT}, {HIGH_PORT})")


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
