"""Every setting of the worker, read once from the environment at start-up.

Nothing else reads ``os.environ``. Any setting ``X`` may instead be given as
``X_FILE``, naming a file that holds the value (Kubernetes secrets mounted as
files); giving both is an error. A bad setting raises :class:`SettingsError`
naming it, which ``run`` turns into one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from worker.apps import App
from worker.errors import SettingsError
from worker.faultpoints import SETTING as FAULT_POINT_SETTING
from worker.faultpoints import FaultPoint, parse_fault_point
from worker.ratelimit import Window, parse_rate_limit
from worker.redact import redact_url
from worker.redis_target import RedisTarget, parse_redis_url

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_API_BASE = "https://qyapi.weixin.qq.com"
DEFAULT_STATE_URL = "sqlite:///./wecom-worker-state.sqlite3"
DEFAULT_RATE_LIMIT = "10000/min,150000/h"
DEFAULT_COMMAND_QUEUE = "wecom.card_update.commands"
DEFAULT_RESULT_QUEUE = "wecom.card_update.results"
DEFAULT_DEAD_LETTER_QUEUE = "wecom.card_update.dead"
DEFAULT_HTTP_HOST = "0.0.0.0"  # noqa: S104 - the pod's probe and scrape port; tests bind 127.0.0.1


@dataclass(frozen=True)
class Settings:
    """The worker's configuration, parsed. ``repr`` shows no secret.

    Defaults live in :func:`load_settings` only (and in the ``DEFAULT_*`` constants).
    """

    amqp_url: str = field(repr=False)
    api_base: str
    apps: tuple[App, ...]
    state_url: str = field(repr=False)
    redis_target: RedisTarget | None  # parsed WECOM_STATE_URL when it names Redis
    rate_limit: str  # as given, for the start-up log line
    rate_windows: tuple[Window, ...]
    command_queue: str
    result_queue: str
    dead_letter_queue: str
    delay_queue: str
    queue_type: Literal["quorum", "classic"]
    prefetch: int
    concurrency: int
    http_port: int
    http_host: str
    log_format: Literal["json", "console"]
    log_level: str
    max_message_bytes: int
    call_timeout: float
    retry_budget: float
    max_limiter_wait: float
    claim_lease: float
    replay_window: float
    shutdown_grace: float
    publish_timeout: float
    sqlite_synchronous: Literal["FULL", "NORMAL"]
    require_durable_store: bool
    redis_wait_replicas: int
    redis_password: str | None = field(repr=False)
    instance_id: str
    fault_point: FaultPoint | None  # test-only, see worker.faultpoints

    @property
    def amqp_url_safe(self) -> str:
        """The broker URL without its password, for logs."""
        return redact_url(self.amqp_url)

    @property
    def state_url_safe(self) -> str:
        """The state store URL without its password, for logs."""
        if self.redis_target is not None:
            return self.redis_target.describe()
        return redact_url(self.state_url)

    @property
    def sqlite_path(self) -> str | None:
        """The file of a ``sqlite:///PATH`` state store; None for Redis."""
        if self.state_url.startswith("sqlite:"):
            return sqlite_path(self.state_url)
        return None


class Environment:
    """Reads settings from a mapping, honouring the ``_FILE`` variants."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        """The value of ``name`` (or the content of the file ``name_FILE`` names), or None."""
        direct = self._environ.get(name)
        file_name = self._environ.get(f"{name}_FILE")
        if direct is not None and file_name is not None:
            raise SettingsError(name, f"both {name} and {name}_FILE are set; set only one")
        if file_name is None:
            return direct if direct != "" else None
        try:
            return Path(file_name).read_text("utf-8").strip()
        except OSError as error:
            raise SettingsError(
                f"{name}_FILE", f"cannot read {file_name}: {error.strerror}"
            ) from None

    def text(self, name: str, default: str) -> str:
        """A string setting."""
        value = self.get(name)
        return default if value is None else value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """An integer setting within [low, high]."""
        value = self.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"expected a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise SettingsError(name, f"must be between {low} and {high}, got {number}")
        return number

    def seconds(self, name: str, default: float, low: float, high: float) -> float:
        """A duration in seconds within [low, high]."""
        value = self.get(name)
        if value is None:
            return default
        try:
            number = float(value.removesuffix("s"))
        except ValueError:
            raise SettingsError(name, f"expected seconds such as 2.5, got {value!r}") from None
        if not math.isfinite(number) or not low <= number <= high:
            raise SettingsError(name, f"must be between {low} and {high} seconds, got {value}")
        return number

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of a few words, case-insensitive."""
        value = self.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        for choice in choices:
            if choice.lower() == lowered:
                return choice
        raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")

    def flag(self, name: str, *, default: bool) -> bool:
        """A boolean: 1/0, true/false, yes/no."""
        value = self.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(name, f"expected true or false, got {value!r}")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from an environment mapping (normally ``os.environ``)."""
    env = Environment(environ)
    amqp_url = env.text("WECOM_AMQP_URL", DEFAULT_AMQP_URL)
    if urlsplit(amqp_url).scheme not in {"amqp", "amqps"}:
        raise SettingsError("WECOM_AMQP_URL", "must start with amqp:// or amqps://")
    api_base = env.text("WECOM_API_BASE", DEFAULT_API_BASE).rstrip("/")
    if urlsplit(api_base).scheme not in {"http", "https"} or not urlsplit(api_base).netloc:
        raise SettingsError("WECOM_API_BASE", f"must be an http(s) URL, got {api_base!r}")
    state_url = env.text("WECOM_STATE_URL", DEFAULT_STATE_URL)
    redis_target = check_state_url(state_url)
    rate_limit = env.text("WECOM_RATE_LIMIT", DEFAULT_RATE_LIMIT)
    command_queue = env.text("WECOM_COMMAND_QUEUE", DEFAULT_COMMAND_QUEUE)
    return Settings(
        amqp_url=amqp_url,
        api_base=api_base,
        apps=load_apps(env),
        state_url=state_url,
        redis_target=redis_target,
        rate_limit=rate_limit,
        rate_windows=parse_rate_limit(rate_limit, "WECOM_RATE_LIMIT"),
        command_queue=command_queue,
        result_queue=env.text("WECOM_RESULT_QUEUE", DEFAULT_RESULT_QUEUE),
        dead_letter_queue=env.text("WECOM_DEAD_LETTER_QUEUE", DEFAULT_DEAD_LETTER_QUEUE),
        delay_queue=env.text("WECOM_DELAY_QUEUE", f"{command_queue}.delay"),
        queue_type=env.choice("WECOM_QUEUE_TYPE", "quorum", ("quorum", "classic")),  # type: ignore[arg-type]
        prefetch=env.integer("WECOM_PREFETCH", 256, 1, 65535),
        concurrency=env.integer("WECOM_CONCURRENCY", 64, 1, 10000),
        http_port=env.integer("WECOM_HTTP_PORT", 8080, 0, 65535),
        http_host=env.text("WECOM_HTTP_HOST", DEFAULT_HTTP_HOST),
        log_format=env.choice("WECOM_LOG_FORMAT", "json", ("json", "console")),  # type: ignore[arg-type]
        log_level=env.choice(
            "WECOM_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
        ),
        max_message_bytes=env.integer("WECOM_MAX_MESSAGE_BYTES", 256 * 1024, 1024, 64 << 20),
        call_timeout=env.seconds("WECOM_CALL_TIMEOUT", 10.0, 0.05, 300.0),
        retry_budget=env.seconds("WECOM_RETRY_BUDGET", 30.0, 0.1, 3600.0),
        max_limiter_wait=env.seconds("WECOM_MAX_LIMITER_WAIT", 20.0, 0.0, 600.0),
        claim_lease=env.seconds("WECOM_CLAIM_LEASE", 60.0, 1.0, 3600.0),
        replay_window=env.seconds("WECOM_REPLAY_WINDOW", 3600.0, 1.0, 72 * 3600.0),
        shutdown_grace=env.seconds("WECOM_SHUTDOWN_GRACE", 25.0, 0.0, 3600.0),
        publish_timeout=env.seconds("WECOM_PUBLISH_TIMEOUT", 10.0, 0.1, 600.0),
        sqlite_synchronous=env.choice("WECOM_SQLITE_SYNCHRONOUS", "FULL", ("FULL", "NORMAL")),  # type: ignore[arg-type]
        require_durable_store=env.flag("WECOM_REQUIRE_DURABLE_STORE", default=False),
        redis_wait_replicas=env.integer("WECOM_REDIS_WAIT_REPLICAS", 0, 0, 16),
        redis_password=env.get("WECOM_REDIS_PASSWORD"),
        instance_id=secrets.token_hex(6),
        fault_point=parse_fault_point(env.get(FAULT_POINT_SETTING)),
    )


def check_state_url(url: str) -> RedisTarget | None:
    """``sqlite:///PATH`` (None) or one of the Redis forms (its parsed target)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise SettingsError(
                "WECOM_STATE_URL", "a sqlite URL is sqlite:///PATH (e.g. sqlite:////data/state.db)"
            )
        return None
    if scheme.startswith("redis"):
        return parse_redis_url(url)
    raise SettingsError(
        "WECOM_STATE_URL",
        f"must be sqlite:///PATH or a Redis URL (redis://HOST:PORT/DB, rediss://…, "
        f"redis+sentinel://…, redis+cluster://…), got scheme {scheme!r}",
    )


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///PATH`` URL (``sqlite:////abs`` is absolute)."""
    return url[len("sqlite:///") :]


def load_apps(env: Environment) -> tuple[App, ...]:
    """Apps from WECOM_APPS_FILE, or the single app of WECOM_CORP_ID / _AGENT_ID / _SECRET."""
    apps_file = env.get("WECOM_APPS_FILE")
    single = [env.get(n) for n in ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_SECRET")]
    if apps_file is not None:
        if any(v is not None for v in single):
            raise SettingsError(
                "WECOM_APPS_FILE", "set either WECOM_APPS_FILE or WECOM_CORP_ID/_AGENT_ID/_SECRET"
            )
        return read_apps_file(apps_file)
    corp_id, agent_id, secret = single
    names = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_SECRET")
    missing = [n for n, v in zip(names, single, strict=True) if v is None]
    if missing:
        raise SettingsError(
            missing[0],
            "no WeCom app configured: set WECOM_CORP_ID, WECOM_AGENT_ID and WECOM_SECRET "
            "(or WECOM_SECRET_FILE), or WECOM_APPS_FILE",
        )
    return (
        App(
            corp_id=str(corp_id),
            agentid=parse_agentid(agent_id, "WECOM_AGENT_ID"),
            secret=str(secret),
        ),
    )


def parse_agentid(value: object, where: str) -> int:
    """An agentid: a positive whole number."""
    if isinstance(value, bool):
        raise SettingsError(where, f"agentid must be a whole number, got {value!r}")
    if not isinstance(value, int | str):
        raise SettingsError(where, f"agentid must be a whole number, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(where, f"agentid must be a whole number, got {value!r}") from None
    if number < 0:
        raise SettingsError(where, f"agentid must not be negative, got {number}")
    return number


def read_apps_file(path: str) -> tuple[App, ...]:
    """The ``[[apps]]`` tables of a TOML file: corp_id, agentid, secret or secret_file."""
    name = "WECOM_APPS_FILE"
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as error:
        raise SettingsError(name, f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(name, f"{path} is not valid TOML: {error}") from None
    entries = data.get("apps")
    if not isinstance(entries, list) or not entries:
        raise SettingsError(name, f"{path} must hold at least one [[apps]] table")
    apps: list[App] = []
    seen: set[tuple[str, int]] = set()
    for index, entry in enumerate(entries):
        where = f"{name} {path} apps[{index}]"
        if not isinstance(entry, dict):
            raise SettingsError(where, "must be a table")
        unknown = set(entry) - {"corp_id", "agentid", "secret", "secret_file"}
        if unknown:
            raise SettingsError(where, f"unknown keys {', '.join(sorted(unknown))}")
        corp_id = entry.get("corp_id")
        if not isinstance(corp_id, str) or not corp_id:
            raise SettingsError(where, "corp_id is required (a string)")
        agentid = parse_agentid(entry.get("agentid"), where)
        secret = app_secret(entry, where)
        if (corp_id, agentid) in seen:
            raise SettingsError(where, f"app {corp_id}/{agentid} is listed twice")
        seen.add((corp_id, agentid))
        apps.append(App(corp_id=corp_id, agentid=agentid, secret=secret))
    return tuple(apps)


def app_secret(entry: dict[str, object], where: str) -> str:
    """``secret`` or the content of ``secret_file``, exactly one."""
    secret, secret_file = entry.get("secret"), entry.get("secret_file")
    if (secret is None) == (secret_file is None):
        raise SettingsError(where, "set exactly one of secret and secret_file")
    if secret_file is not None:
        if not isinstance(secret_file, str):
            raise SettingsError(where, "secret_file must be a path")
        try:
            secret = Path(secret_file).read_text("utf-8").strip()
        except OSError as error:
            raise SettingsError(
                where, f"cannot read secret_file {secret_file}: {error.strerror}"
            ) from None
    if not isinstance(secret, str) or not secret:
        raise SettingsError(where, "the secret must be a non-empty string")
    return secret
