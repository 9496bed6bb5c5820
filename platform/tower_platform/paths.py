"""Paths: where the files shipped with the package live (from a source tree and from an installed wheel), and the
one check that a path the platform writes stays under its root (``$TOWER_HOME`` or a folder inside it)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tower_platform.errors import UsageError


def packaged_feature_repo() -> Path:
    return Path(str(resources.files("tower_platform._feature_repo")))


def packaged_migrations() -> Path:
    return Path(str(resources.files("tower_platform._migrations")))


def bundled_dir() -> Path:
    return Path(str(resources.files("tower_platform") / "bundled"))


def bundled_config(name: str = "movielens-latest-small") -> Path:
    return bundled_dir() / "configs" / f"{name}.yaml"


def within(root: str | Path, *parts: str | Path) -> Path:
    """``root / parts`` resolved (symlinks followed), refused with UsageError when it lies outside ``root``.

    Every folder the platform derives from a name (``artifacts/<model>/<run>``, ``sources``) goes through here, so a
    name such as ``../x`` or ``/abs/path`` that slipped past the name rule still cannot write elsewhere.
    """
    base = Path(root).expanduser().resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        shown = "/".join(str(p) for p in parts)
        raise UsageError(
            f"The path {shown!r} resolves to {path}, outside {base}; the platform writes only under $TOWER_HOME: "
            "use a plain name (letters, digits, '-', '_')."
        )
    return path
