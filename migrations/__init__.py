"""Alembic environment of the registry schema, installed as ``tower_platform._migrations``.

Run it through ``towerctl db upgrade|current|downgrade`` (the Config is built in
:mod:`tower_platform.registry.migration`); ``alembic -c migrations/alembic.ini ...`` also works from a source tree.
"""
