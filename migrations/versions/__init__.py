"""Revisions of the registry schema, one file each, applied in order by Alembic."""
