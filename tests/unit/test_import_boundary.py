"""`towers` stays free of the platform: importing it (every module) in a fresh interpreter pulls in none of these."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("feast", "qdrant_client", "sqlalchemy", "typer", "tower_platform")


def test_importing_towers_imports_no_platform_dependency():
    code = (
        "import importlib, json, pkgutil, sys, towers\n"
        "for m in pkgutil.walk_packages(towers.__path__, 'towers.'): importlib.import_module(m.name)\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_check_itself_can_fail():
    code = f"import json, sys, tower_platform.errors\nprint(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "tower_platform" in json.loads(result.stdout.strip().splitlines()[-1])
