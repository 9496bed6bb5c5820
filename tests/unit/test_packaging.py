"""The wheel ships every package folder: the explicit package list in pyproject.toml must cover the source tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> tuple[list[str], dict[str, str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = data["tool"]["setuptools"]
    return setuptools["packages"], setuptools["package-dir"]


def test_every_python_folder_is_a_declared_package():
    packages, package_dir = _declared()
    missing = []
    for package, folder in package_dir.items():
        for sub in (ROOT / folder).rglob("*.py"):
            rel = sub.parent.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            dotted = ".".join((package, *rel.parts)) if rel.parts else package
            if dotted not in packages:
                missing.append(dotted)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(set(missing))}"


def test_platform_folder_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists(), "platform/__init__.py shadows the stdlib platform module"


def test_bundled_dataset_carries_its_licence():
    bundled = ROOT / "platform" / "tower_platform" / "bundled" / "movielens-latest-small"
    readme = (bundled / "README.txt").read_text(encoding="utf-8")
    assert "Usage License" in readme
    assert (bundled / "ratings.csv").stat().st_size > 1_000_000
