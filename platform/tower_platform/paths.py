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


def stored_path(path: str | Path, home_dir: Path | None) -> str:
    """How the registry records a file: relative to ``home_dir`` (POSIX form, e.g. ``artifacts/movies/v1/query.onnx``)
    when it lies under it, so that a copied, moved or restored home reads its own files; else absolute."""
    absolute = Path(path).expanduser().resolve()
    if home_dir is not None:
        home = Path(home_dir).expanduser().resolve()
        if home in absolute.parents:
            return absolute.relative_to(home).as_posix()
    return str(absolute)


def resolved_path(stored: str, home_dir: Path | None) -> str:
    """A path as the registry recorded it, made absolute: relative ones against ``home_dir``; absolute ones (rows
    written before paths were stored relative, exports outside the home) unchanged."""
    path = Path(stored)
    if path.is_absolute() or home_dir is None:
        return str(path)
    return str(Path(home_dir).expanduser().resolve() / path)


def writable_folder(folder: str | Path, *, setting: str) -> Path:
    """``folder``, checked writable without leaving a trace: it (or, when it does not exist yet, its nearest existing
    parent, where it will be created) must be a folder in which a probe file can be created and removed; else
    ConfigError naming ``setting`` (the environment variable the folder comes from)."""
    import tempfile

    from tower_platform.errors import ConfigError

    path = Path(folder).expanduser().resolve()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise ConfigError(f"{setting}={path} is not a folder{where}; point {setting} at a folder this user can write.")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".tower-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{setting}={path} cannot be written ({reason} in {existing}); point {setting} at a folder this user can write."
        ) from None
    return path
