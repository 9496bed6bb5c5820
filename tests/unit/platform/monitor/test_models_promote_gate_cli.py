"""`towerctl models promote` with the alignment gate: refusal (exit 10), --force without --reason, forced promotion."""
from __future__ import annotations
import json
from test_monitor_cli import _run, home, two_versions  # noqa: F401


def test_promote_refuses_a_breaching_version_and_force_needs_and_records_a_reason(two_versions):
    result = _run("models", "promote", "movies", "2", code=10)
    assert "category 'C'" in result.stderr and "--force --reason" in result.stderr
    assert "breaches" in result.stdout  # the report was printed before the refusal
    assert "needs a reason" in _run("models", "promote", "movies", "2", "--force", code=2).stderr
    forced = json.loads(_run("models", "promote", "movies", "2", "--force", "--reason", "accepted", "--json").stdout)
    assert forced["forced"] and forced["verdict"]["breaches"]
    event = [e for e in json.loads(_run("models", "history", "movies", "--json").stdout) if e["action"] == "promote"][-1]
    assert event["reason"] == "accepted" and event["details"]["gate"]["forced"]
