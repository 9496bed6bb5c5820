"""Secrets and noise at the CLI edge: credentials in URLs never printed, our one line instead of the Qdrant client's
insecure-connection warning, third-party deprecation warnings hidden unless -v, help texts that keep their brackets."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tower_platform.cli.main import app
from tower_platform.redaction import redact, redact_url
from tower_platform.settings import get_settings

runner = CliRunner()
QDRANT_URL = "http://admin:hunter2@127.0.0.1:9/?api-key=s3cret-in-url"  # port 9 (discard): nothing answers


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://admin:hunter2@qdrant:6333/?api-key=k1&timeout=5", "http://admin:***@qdrant:6333/?api-key=***&timeout=5"),
        ("https://TOKEN123@cloud.qdrant.io:6333", "https://***@cloud.qdrant.io:6333"),
        ("postgresql+psycopg://tower:p/w@x@db:5432/registry", "postgresql+psycopg://tower:***@db:5432/registry"),
        ("http://qdrant:6333/collections?api_key=abc#top", "http://qdrant:6333/collections?api_key=***#top"),
        ("http://qdrant:6333", "http://qdrant:6333"),
        ("sqlite:////var/tower/registry.db", "sqlite:////var/tower/registry.db"),
    ],
)
def test_urls_lose_their_credentials_and_nothing_else(url, expected):
    assert redact_url(url) == expected


def test_a_message_loses_every_url_secret_and_the_known_secret_values():
    text = "Qdrant at http://a:pw@h:1/?token=t0k failed (ConnectError: header api-key=abcd1234 refused)"
    assert redact(text, secrets=["abcd1234", None, ""]) == (
        "Qdrant at http://a:***@h:1/?token=*** failed (ConnectError: header api-key=*** refused)"
    )


@pytest.fixture
def remote_home(tmp_path, monkeypatch, exported_model) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    exported_model(home / "artifacts" / "movies" / "v1")
    result = runner.invoke(app, ["models", "register", str(home / "artifacts" / "movies" / "v1")])
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv("TOWER_QDRANT__URL", QDRANT_URL)
    monkeypatch.setenv("TOWER_QDRANT__API_KEY", "the-api-key-value")
    monkeypatch.setenv("TOWER_QDRANT__TIMEOUT_S", "2")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def test_an_unreachable_qdrant_with_credentials_is_reported_without_them(remote_home):
    result = runner.invoke(app, ["embeddings", "status", "movies"])
    assert result.exit_code == 5, (result.stdout, result.stderr, result.exception)
    for secret in ("hunter2", "s3cret-in-url", "the-api-key-value"):
        assert secret not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "http://admin:***@127.0.0.1:9/?api-key=***" in lines[-1]
    # the client's own warning is replaced by one line of ours
    assert "Api key is used with an insecure connection" not in result.stderr
    assert lines[:-1] == [
        "warning: the Qdrant API key travels unencrypted to http://admin:***@127.0.0.1:9/?api-key=*** (plain "
        "http); use an https:// URL in TOWER_QDRANT__URL."
    ]


# A real process: a command whose third-party library emits a DeprecationWarning, as Feast's DuckDB backend does on
# nearly every command (pytest's own warning capture would hide the difference in-process).
CHILD = textwrap.dedent(
    """
    import sys, warnings
    sys.path.insert(0, sys.argv[1])
    import thirdparty
    import tower_platform.cli.main as main
    from tower_platform.cli.main import app

    @app.command("noisy")
    def noisy() -> None:
        thirdparty.old_api()
        # as if raised in our own code (tower_platform/cli/main.py)
        warnings.warn_explicit("our own deprecation", DeprecationWarning, filename=main.__file__, lineno=1)
        print("done")

    app(sys.argv[2:], prog_name="towerctl")
    """
)


def _run_child(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    library = tmp_path / "lib"
    (library / "thirdparty").mkdir(parents=True, exist_ok=True)
    (library / "thirdparty" / "__init__.py").write_text(
        "import warnings\n"
        "warnings.simplefilter('once', DeprecationWarning)  # as feast does at import\n"
        "def old_api():\n"
        "    warnings.warn('fetch_arrow_table() is deprecated', DeprecationWarning, stacklevel=1)\n"
    )
    return subprocess.run([sys.executable, "-c", CHILD, str(library), *args], capture_output=True, text=True,
                          timeout=120)


def test_third_party_deprecation_warnings_are_hidden_unless_verbose(tmp_path):
    quiet = _run_child(tmp_path, "noisy")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "done"
    assert "fetch_arrow_table" not in quiet.stderr
    assert "our own deprecation" in quiet.stderr  # ours stay visible: they are for us to fix
    verbose = _run_child(tmp_path, "-v", "noisy")
    assert verbose.returncode == 0, verbose.stderr
    assert "fetch_arrow_table() is deprecated" in verbose.stderr


def _walk(command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "commands"):  # a group (typer vendors its own click)
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


def test_every_help_text_keeps_its_brackets():
    root = typer.main.get_command(app)
    checked = 0
    for path, command in _walk(root):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        brackets = [b for text in texts for b in re.findall(r"\[[^\]\n]*\]", text)]
        if not brackets:
            continue
        result = runner.invoke(app, [*path, "--help"], terminal_width=250, env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.stdout
        flat = " ".join(result.stdout.replace("│", " ").split())
        for bracket in brackets:
            assert " ".join(bracket.split()) in flat, (path, bracket)
        checked += 1
    assert checked >= 2  # `features materialize` ([start, end]) and `train --set` (hidden_dims=[...]) at least
