"""Alembic environment of the registry (installed as tower_platform._migrations)."""
