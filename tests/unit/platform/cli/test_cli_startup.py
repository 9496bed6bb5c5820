"""`towerctl --help` stays fast: building the CLI imports none of the slow libraries its commands use."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("feast", "torch", "qdrant_client", "onnxruntime", "sqlalchemy")


def _loaded_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_building_the_cli_imports_no_heavy_library():
    assert _loaded_after("from tower_platform.cli.main import app; app(['--help'], standalone_mode=False)") == []


def test_the_check_itself_can_fail():
    assert "sqlalchemy" in _loaded_after("import tower_platform.registry.store")
