"""Processes and listening sockets seen through psutil, so tests need no iproute2 (`ss`) or procps (`ps`, `pgrep`).

    .venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); import proc_helpers as p; print(p.listen_addresses(22))"
"""
from __future__ import annotations

import os

import psutil


def listen_addresses(port: int) -> set[str]:
    """The local addresses of every TCP socket listening on `port` (any process)."""
    return {c.laddr.ip for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """(local address, port, pid) of every TCP listener owned by one of `pids`."""
    return [(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def session_pids(sid: int) -> list[int]:
    """Pids of the live processes in session `sid` (what `ps -o pid= -s SID` lists); zombies are not alive."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.info["pid"]) == sid:
                found.append(proc.info["pid"])
        except (ProcessLookupError, PermissionError):
            pass
    return sorted(found)


def pids_with(text: str) -> list[int]:
    """Pids whose command line contains `text` (what `pgrep -f TEXT` lists), this process excluded."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if text in cmd and proc.info["pid"] != os.getpid():
            found.append(proc.info["pid"])
    return found
