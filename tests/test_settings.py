"""Settings from the environment: defaults, _FILE variants, apps files and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.apps import App, AppRegistry
from worker.errors import SettingsError, UnknownApp
from worker.redact import redact_text, redact_url
from worker.settings import load_settings

BASE = {"WECOM_CORP_ID": "ww1", "WECOM_AGENT_ID": "1000002", "WECOM_SECRET": "s3cret"}


def test_defaults_follow_the_contract() -> None:
    """Every default is CONTRACT.md's."""
    settings = load_settings(BASE)
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.api_base == "https://qyapi.weixin.qq.com"
    assert settings.state_url == "sqlite:///./wecom-worker-state.sqlite3"
    assert settings.rate_limit == "10000/min,150000/h"
    assert (settings.prefetch, settings.concurrency, settings.http_port) == (256, 64, 8080)
    assert (settings.http_host, settings.log_format, settings.log_level) == (
        "0.0.0.0",
        "json",
        "info",
    )
    assert settings.command_queue == "wecom.card_update.commands"
    assert settings.result_queue == "wecom.card_update.results"
    assert settings.dead_letter_queue == "wecom.card_update.dead"
    assert settings.queue_type == "quorum"
    assert settings.apps == (App("ww1", 1000002, "s3cret"),)


def test_secret_never_in_repr() -> None:
    """Neither the settings nor an app show the secret or the broker password."""
    settings = load_settings({**BASE, "WECOM_AMQP_URL": "amqp://u:pw-123@h:5672/"})
    assert "s3cret" not in repr(settings)
    assert "pw-123" not in repr(settings)
    assert settings.amqp_url_safe == "amqp://u:***@h:5672/"


def test_file_variant_reads_the_value(tmp_path: Path) -> None:
    """X_FILE names a file holding X (trailing newline stripped)."""
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    env = {k: v for k, v in BASE.items() if k != "WECOM_SECRET"} | {
        "WECOM_SECRET_FILE": str(secret)
    }
    assert load_settings(env).apps[0].secret == "from-file"


def test_both_value_and_file_is_an_error(tmp_path: Path) -> None:
    """Setting X and X_FILE together is refused, naming X."""
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "WECOM_SECRET_FILE": str(tmp_path)})
    assert caught.value.name == "WECOM_SECRET"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WECOM_PREFETCH", "zero"),
        ("WECOM_PREFETCH", "0"),
        ("WECOM_CONCURRENCY", "100000"),
        ("WECOM_HTTP_PORT", "70000"),
        ("WECOM_RATE_LIMIT", "10/day"),
        ("WECOM_RATE_LIMIT", ""),
        ("WECOM_STATE_URL", "mysql://db"),
        ("WECOM_STATE_URL", "sqlite://relative"),
        ("WECOM_AMQP_URL", "http://broker"),
        ("WECOM_API_BASE", "qyapi.weixin.qq.com"),
        ("WECOM_LOG_FORMAT", "xml"),
        ("WECOM_LOG_LEVEL", "loud"),
        ("WECOM_QUEUE_TYPE", "stream"),
        ("WECOM_AGENT_ID", "abc"),
        ("WECOM_RETRY_BUDGET", "-1"),
        ("WECOM_REQUIRE_DURABLE_STORE", "maybe"),
    ],
)
def test_bad_values_name_their_setting(name: str, value: str) -> None:
    """Each malformed setting raises SettingsError naming exactly that setting."""
    env = {**BASE, name: value}
    if name == "WECOM_RATE_LIMIT" and value == "":
        env[name] = " "
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.name == name


def test_missing_app_names_the_first_missing_setting() -> None:
    """No credentials at all: the error says which settings to give."""
    with pytest.raises(SettingsError) as caught:
        load_settings({})
    assert caught.value.name == "WECOM_CORP_ID"
    assert "WECOM_APPS_FILE" in caught.value.problem


def test_apps_file_with_several_corps(tmp_path: Path) -> None:
    """WECOM_APPS_FILE lists apps of several corps; secret_file works too."""
    (tmp_path / "s2").write_text("second\n")
    apps = tmp_path / "apps.toml"
    apps.write_text(
        f"""
[[apps]]
corp_id = "ww1"
agentid = 1000002
secret = "first"

[[apps]]
corp_id = "ww2"
agentid = 1000005
secret_file = "{tmp_path / "s2"}"
"""
    )
    settings = load_settings({"WECOM_APPS_FILE": str(apps)})
    assert [(a.corp_id, a.agentid, a.secret) for a in settings.apps] == [
        ("ww1", 1000002, "first"),
        ("ww2", 1000005, "second"),
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not toml [", "not valid TOML"),
        ("", "at least one [[apps]]"),
        ('[[apps]]\ncorp_id = "a"\nagentid = 1\n', "exactly one of secret and secret_file"),
        ('[[apps]]\ncorp_id = "a"\nagentid = "x"\nsecret = "s"\n', "agentid"),
        (
            '[[apps]]\ncorp_id = "a"\nagentid = 1\nsecret = "s"\nsecrte = "t"\n',
            "unknown keys secrte",
        ),
        (
            '[[apps]]\ncorp_id = "a"\nagentid = 1\nsecret = "s"\n[[apps]]\ncorp_id = "a"\nagentid = 1\nsecret = "t"\n',
            "twice",
        ),
    ],
)
def test_bad_apps_file_says_what_is_wrong(tmp_path: Path, content: str, problem: str) -> None:
    """A broken apps file names the file, the entry and the problem."""
    apps = tmp_path / "apps.toml"
    apps.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_settings({"WECOM_APPS_FILE": str(apps)})
    assert problem in str(caught.value)
    assert "WECOM_APPS_FILE" in str(caught.value)


def test_apps_file_and_single_app_together_is_refused(tmp_path: Path) -> None:
    """Either an apps file or the three single-app settings."""
    with pytest.raises(SettingsError):
        load_settings({**BASE, "WECOM_APPS_FILE": str(tmp_path / "apps.toml")})


def test_registry_resolves_and_explains_unknown_apps() -> None:
    """corp_id may be omitted with one corp; unknown corps and agentids say what is configured."""
    one = AppRegistry([App("ww1", 1, "a"), App("ww1", 2, "b")])
    assert one.resolve(None, 2).agentid == 2
    with pytest.raises(UnknownApp, match="agentid 3"):
        one.resolve("ww1", 3)
    two = AppRegistry([App("ww1", 1, "a"), App("ww2", 1, "b")])
    with pytest.raises(UnknownApp, match="corp_id is required"):
        two.resolve(None, 1)
    with pytest.raises(UnknownApp, match="ww3"):
        two.resolve("ww3", 1)


def test_redaction_masks_tokens_secrets_and_passwords() -> None:
    """Log values lose access_token / corpsecret values and URL passwords."""
    text = "GET /cgi-bin/gettoken?corpid=ww1&corpsecret=abc123 then ?access_token=tok.EN-1 amqp://u:pw@h/"
    masked = redact_text(text)
    for secret in ("abc123", "tok.EN-1", ":pw@"):
        assert secret not in masked
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
