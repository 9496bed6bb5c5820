"""Tests of ``towers``, one folder per package; ``synthetic_interactions`` (next to this file) builds their data."""
