"""The embedded cluster's dashboard port never collides with a port Ray gives another component by default.

    .venv/bin/python -m pytest tests/test_local_ray_ports.py -q
"""
from __future__ import annotations

import socket

import pytest

from sweeps import ray_cluster


class _OSPicks:
    """Stands in for socket.socket: bind(("127.0.0.1", 0)) gets the next port of a scripted sequence."""

    def __init__(self, ports):
        self.ports = iter(ports)

    def __call__(self, *args, **kwargs):
        port = next(self.ports)
        sock = type("Sock", (), {"bind": lambda self, addr: None, "getsockname": lambda self: ("127.0.0.1", port),
                                 "__enter__": lambda self: self, "__exit__": lambda self, *exc: None})
        return sock()


def test_the_dashboard_agents_default_port_is_skipped(monkeypatch):
    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT as AGENT

    assert AGENT == 52365  # the port of the CI failure; the check below must keep following Ray's constant
    monkeypatch.setattr(socket, "socket", _OSPicks([AGENT, AGENT, 40123]))
    assert ray_cluster.dashboard_port() == 40123


def test_ray_refuses_the_collision_that_dashboard_port_avoids():
    from ray._private.parameter import RayParams

    with pytest.raises(ValueError, match="dashboard_agent_http is trying to use a port number 52365"):
        RayParams(dashboard_port=52365).update_pre_selected_port()
    RayParams(dashboard_port=40123).update_pre_selected_port()  # any other free port is accepted


def test_a_real_free_port_is_bindable():
    port = ray_cluster.dashboard_port()
    assert port != 52365
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
