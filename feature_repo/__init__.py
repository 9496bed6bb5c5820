"""Feast repository of Tower Platform (installed as tower_platform._feature_repo). Definitions only."""
