"""Feast repository of Tower Platform (installed as tower_platform._feature_repo): feature_store.yaml and repo.py, whose objects come from tower_platform.datasets.feast_definitions."""
