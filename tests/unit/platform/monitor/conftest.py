"""Fixtures of the monitor tests (the world itself is built in monitor_world.py)."""

from __future__ import annotations

import pytest

from monitor_world import MonitorWorld, build_world


@pytest.fixture(scope="session")
def world() -> MonitorWorld:
    return build_world()
