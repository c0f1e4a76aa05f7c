"""One cached SSH connection per machine and worker process.

A paramiko Transport is a socket plus a thread; after ``fork()`` the child has the socket but
not the thread, and anything it sends would corrupt the parent's session. So the cache belongs
to one process: a forked child (a Celery prefork worker) starts with an empty one and
abandons, without closing, what it inherited.

The cache key is the caller's, and should change whenever the machine's credentials or pinned
host key change (for example ``(machine.pk, machine.credentials_version)``); a spec that differs
from the cached connection's also reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Hashable

from machines.ssh.connection import ConnectionSpec, SSHConnection

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_connections: dict[Hashable, SSHConnection] = {}
_owner_pid = os.getpid()
# Connections inherited across fork: kept referenced so that garbage collection never runs
# paramiko's close() (which would write to the parent's socket) in the child.
_inherited: list[SSHConnection] = []


def _forget_inherited() -> None:
    global _lock, _owner_pid
    # The lock may have been held by another thread of the parent at the moment of fork.
    _lock = threading.Lock()
    for connection in _connections.values():
        _inherited.append(connection)
        _close_socket_copy(connection)
    _connections.clear()
    _owner_pid = os.getpid()


def _close_socket_copy(connection: SSHConnection) -> None:
    """Close this process's copy of the socket; the parent's stays open and untouched."""
    client = connection._client
    transport = client.get_transport() if client is not None else None
    if transport is not None:
        with contextlib.suppress(OSError):
            transport.sock.close()


os.register_at_fork(after_in_child=_forget_inherited)


def get_connection(key: Hashable, spec: ConnectionSpec) -> SSHConnection:
    """The live connection cached under ``key``, connecting (or reconnecting) if needed.

    Raises the errors of ``machines.ssh.errors`` when the machine cannot be reached.
    """
    if os.getpid() != _owner_pid:
        # A fork that bypassed the at-fork hook (it always runs for os.fork; belt and braces).
        _forget_inherited()
    with _lock:
        connection = _connections.get(key)
        if connection is not None and (connection.spec != spec or not connection.is_alive()):
            logger.debug("SSH pool: replacing connection for %r", key)
            connection.close()
            connection = None
        if connection is None:
            connection = SSHConnection(spec)
            _connections[key] = connection
    # Connect outside the pool lock: one slow machine must not stall the others.
    try:
        connection.connect()
    except Exception:
        with _lock:
            if _connections.get(key) is connection:
                del _connections[key]
        raise
    return connection


def drop_connection(key: Hashable) -> None:
    """Closes the connection cached under ``key`` and those under tuple keys that start with it:
    ``drop_connection(machine.pk)`` drops the machine's connection whatever credential version
    and host key it was cached under."""
    with _lock:
        keys = [k for k in _connections if k == key or (isinstance(k, tuple) and k[:1] == (key,))]
        dropped = [_connections.pop(k) for k in keys]
    for connection in dropped:
        connection.close()


def close_all() -> None:
    with _lock:
        connections = list(_connections.values())
        _connections.clear()
    for connection in connections:
        connection.close()
