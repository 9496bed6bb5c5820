"""The layer contracts of pyproject.toml ([tool.importlinter]) hold: `make test` fails when an import breaks one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_are_kept():
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_can_break(tmp_path):
    inverted = tmp_path / "inverted.toml"
    inverted.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["tower_platform"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "errors above cli (inverted on purpose)"\n'
        'type = "layers"\n'
        'layers = ["tower_platform.registry", "tower_platform.cli"]\n'
    )
    result = _lint("--config", str(inverted))
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
