"""Real RabbitMQ and Redis for the test run: child processes on 127.0.0.1, free ports, a temp dir.

``RabbitMQNode`` runs Debian's ``/usr/lib/rabbitmq/bin/rabbitmq-server`` with its own epmd, node
name, data and log directories, and no plugins; ``RedisServer`` runs ``redis-server`` with an
append-only file fsynced on every write. Both ``restart()`` on the same port and data, so tests can
check what survives. Every socket they open (AMQP, Erlang distribution, epmd, the rabbitmqctl
node, Redis) is bound to loopback.

Each process runs in its own process group. ``close()`` (and an ``atexit`` hook) stops it
gracefully and deletes its directory; if this interpreter dies without running ``atexit``
(SIGKILL, ``os._exit``), a small watchdog process SIGKILLs the groups and deletes the directories
still registered, so no beam, epmd or redis outlives a run.

Nothing here reads the environment. ``tests/conftest.py`` does: when ``WECOM_TEST_AMQP_URL`` or
``WECOM_TEST_REDIS_URL`` is set, its fixtures hand out that URL and start nothing, and the fixtures
that need to control the process (``rabbitmq``, ``fresh_vhost``, ``redis_server``) skip.

A missing binary raises ``ServiceError`` saying to run ``scripts/ensure-system-packages.sh``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

LOOPBACK = "127.0.0.1"
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
INSTALL_HINT = "run `scripts/ensure-system-packages.sh` as root to install it"
# Erlang's {127,0,0,1}: the distribution listener of the node and of every rabbitmqctl call.
_DIST_ON_LOOPBACK = "-kernel inet_dist_use_interface {127,0,0,1}"
_LOG_TAIL_LINES = 40
_APP_DEPENDENCIES = re.compile(r"\{(?:included_)?applications,\s*\[([^\]]*)\]")


class ServiceError(RuntimeError):
    """A test service could not be found, started, stopped or controlled."""


_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range, not handed out before.

    Below that range no outgoing connection can take the port while its service restarts, and a
    client that keeps reconnecting to a stopped service never ends up connected to itself.
    """
    low, high = 10000, _ephemeral_ports_start()
    with _ports_lock:
        for _ in range(1000):
            candidate = random.randrange(low, high) if high - low >= 1000 else 0
            with socket.socket() as sock:
                try:
                    sock.bind((LOOPBACK, candidate))
                except OSError:
                    continue
                port: int = sock.getsockname()[1]
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise ServiceError("found no free TCP port on 127.0.0.1")


def executable(path_or_name: str, package: str) -> str:
    """The full path of a program from a Debian package, or a ServiceError saying how to get it."""
    found = shutil.which(path_or_name)
    if found is None:
        raise ServiceError(f"{path_or_name} not found (Debian package {package}); {INSTALL_HINT}")
    return found


# Reads "+ group PGID", "- dir PATH", ... lines; when the pipe closes (its parent is gone), it
# SIGKILLs the groups and deletes the directories still registered.
_WATCHDOG_SOURCE = """
import os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
held = {"group": set(), "dir": set()}
for line in sys.stdin:
    verb, kind, value = line.rstrip("\\n").split(" ", 2)
    (held[kind].add if verb == "+" else held[kind].discard)(value)
for pgid in held["group"]:
    try:
        os.killpg(int(pgid), signal.SIGKILL)
    except ProcessLookupError:
        pass
for path in held["dir"]:
    shutil.rmtree(path, ignore_errors=True)
"""


class _Watchdog:
    """A sidecar process that cleans up after this interpreter however it ends (even SIGKILL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def track(self, kind: Literal["group", "dir"], value: object) -> None:
        """Kill this process group / delete this directory if the interpreter dies first."""
        self._send(f"+ {kind} {value}\n")

    def forget(self, kind: Literal["group", "dir"], value: object) -> None:
        """It was cleaned up here; leave it alone."""
        self._send(f"- {kind} {value}\n")

    def close(self) -> None:
        """Stop the watchdog; it kills whatever is still registered."""
        with self._lock:
            if self._process is not None and self._process.stdin is not None:
                self._process.stdin.close()
                self._process.wait()
            self._process = None

    def _send(self, line: str) -> None:
        with self._lock:
            if self._process is None:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", _WATCHDOG_SOURCE],
                    stdin=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # a Ctrl-C meant for pytest must not reach it
                )
                atexit.register(self.close)
            assert self._process.stdin is not None
            self._process.stdin.write(line)
            self._process.stdin.flush()


_watchdog = _Watchdog()


class _Child:
    """A service process leading its own process group, with its output appended to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], output: Path) -> None:
        with output.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _watchdog.track("group", self.process.pid)

    def running(self) -> bool:
        """Whether the group leader is still alive."""
        return self.process.poll() is None

    def terminate(self, timeout: float) -> None:
        """SIGTERM the leader only (it shuts its children down), then SIGKILL what is left."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        _watchdog.forget("group", self.process.pid)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RabbitMQ/Erlang settings a developer's shell may carry."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RABBITMQ_", "ERL_")) and key != "NOTIFY_SOCKET"
    }
    env["LC_ALL"] = "C.UTF-8"  # the Elixir CLI warns on a latin1 VM
    env.update(extra)
    return env


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def amqp_greets(port: int) -> bool:
    """Whether a broker on the port answers the AMQP 0-9-1 header with Connection.Start."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = _recv_exactly(sock, 11)
    except OSError:
        return False
    # a method frame (type 1) carrying class 10 (connection), method 10 (start)
    return frame[:1] == b"\x01" and frame[7:11] == b"\x00\x0a\x00\x0a"


def redis_pongs(port: int) -> bool:
    """Whether a Redis on the port answers PING (not -LOADING while it replays its AOF).

    A server with a password answers -NOAUTH: it is up, too.
    """
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return _recv_exactly(sock, 7) in {b"+PONG\r\n", b"-NOAUTH"}
    except OSError:
        return False


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_until(
    ready: Callable[[], bool], child: _Child, timeout: float, what: str, logs: list[Path]
) -> None:
    """Poll ``ready`` until it holds; raise with the logs' tails if the child exits or time's up."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not child.running():
            problem = f"{what} exited with status {child.process.returncode} while starting"
        elif time.monotonic() > deadline:
            problem = f"{what} was not ready after {timeout:.0f} s"
        else:
            time.sleep(0.05)
            continue
        tails = "\n".join(f"--- last lines of {log}:\n{_tail(log)}" for log in logs)
        raise ServiceError(f"{problem}\n{tails}")


class _Service(ABC):
    """Start/stop/restart/close plumbing shared by the services; subclasses spawn and probe."""

    name = "service"

    def __init__(self, start_timeout: float, stop_timeout: float) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"wecom-test-{self.name}-"))
        _watchdog.track("dir", self.base_dir)
        self.startup_seconds: float | None = None
        """Seconds from the latest launch to ready, for reports."""
        self._process: _Child | None = None
        self._launched_at: float | None = None  # set from launch until it answers
        self._closed = False
        atexit.register(self.close)

    def start(self) -> None:
        """Start the service and wait until it answers; a no-op if it already does."""
        if not self.running():
            self.launch()
        if self._launched_at is not None:
            self.wait_ready()

    def launch(self) -> None:
        """Spawn the service without waiting for it (a no-op if it is running)."""
        if self.running():
            return
        if self._closed:
            raise ServiceError(f"{self!r} was closed")
        self._launched_at = time.monotonic()
        self._process = self._spawn()

    def wait_ready(self) -> None:
        """Block until the launched service answers; raise with its logs if it cannot."""
        if self._process is None:
            raise ServiceError(f"{self!r}: wait_ready() before launch()")
        _wait_until(self._answers, self._process, self.start_timeout, repr(self), self._logs())
        if self._launched_at is not None:
            self.startup_seconds = time.monotonic() - self._launched_at
            self._launched_at = None

    def running(self) -> bool:
        """Whether the service process is alive (it may still be starting)."""
        return self._process is not None and self._process.running()

    def stop(self) -> None:
        """Stop the service gracefully (SIGTERM), keeping its data and port for ``start()``."""
        if self._process is not None:
            self._process.terminate(self.stop_timeout)
            self._process = None
        self._launched_at = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the data directory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _watchdog.forget("dir", self.base_dir)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the service's main log."""
        return _tail(self._logs()[-1], lines)

    @abstractmethod
    def _spawn(self) -> _Child:
        """Start the service process (and any helper it needs)."""

    @abstractmethod
    def _answers(self) -> bool:
        """Whether the service answers a client now."""

    @abstractmethod
    def _logs(self) -> list[Path]:
        """Files to show when it fails to start, the main log last."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _lean_rabbitmq_home(server: Path, lean: Path, plugins: tuple[str, ...] = ()) -> Path | None:
    """Build a RABBITMQ_HOME whose plugins directory holds only the apps the broker runs.

    Erlang loads each module on first use by trying every directory on the code path, and the
    stock home puts all ~70 bundled plugins there; with the ~20 apps ``rabbit`` depends on, the
    node starts in about 2.4 s instead of 4. Returns None (use the stock home) on an unexpected
    layout.
    """
    home = server.resolve().parent.parent
    apps = {path.name.rsplit("-", 1)[0]: path for path in (home / "plugins").glob("*-*")}
    needed: set[str] = set()
    pending = ["rabbit", *plugins]
    while pending:
        app = pending.pop()
        spec = apps[app] / "ebin" / f"{app}.app" if app in apps else None
        if app in needed or spec is None or not spec.is_file():
            continue  # seen, or an OTP app (those are not under plugins/)
        needed.add(app)
        for listed in _APP_DEPENDENCIES.findall(spec.read_text()):
            pending.extend(name.strip() for name in listed.split(",") if name.strip())
    scripts = [home / "sbin" / "rabbitmq-env", home / "sbin" / "rabbitmq-defaults"]
    if not {"rabbit", *plugins} <= needed or not all(script.is_file() for script in scripts):
        return None
    (lean / "sbin").mkdir(parents=True)
    (lean / "plugins").mkdir()
    for script in scripts:
        (lean / "sbin" / script.name).symlink_to(script)
    (lean / "escript").symlink_to(home / "escript")  # rabbitmqctl runs from here
    for app in needed:
        (lean / "plugins" / apps[app].name).symlink_to(apps[app])
    return lean


class RabbitMQNode(_Service):
    """One RabbitMQ node on 127.0.0.1 with its own epmd; user guest/guest, vhost ``/``.

    No plugins by default. ``prometheus=True`` enables ``rabbitmq_prometheus`` on
    ``prometheus_port`` (127.0.0.1), as the deploy/ dashboards and alerts expect it.
    """

    name = "rabbitmq"

    def __init__(
        self, *, prometheus: bool = False, start_timeout: float = 90.0, stop_timeout: float = 30.0
    ) -> None:
        self.plugins: tuple[str, ...] = ("rabbitmq_prometheus",) if prometheus else ()
        self._server_program = executable(str(RABBITMQ_BIN / "rabbitmq-server"), "rabbitmq-server")
        self._rabbitmqctl = executable(str(RABBITMQ_BIN / "rabbitmqctl"), "rabbitmq-server")
        self._epmd_program = executable("epmd", "erlang-base")
        super().__init__(start_timeout, stop_timeout)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.prometheus_port = free_port() if prometheus else None
        self.nodename = f"wecomtest-{self.port}@localhost"
        self.url = f"amqp://guest:guest@{LOOPBACK}:{self.port}/"
        self.console_log = self.base_dir / "console.log"
        """The node's stdout and stderr: errors from before its log file is open."""
        self.node_log = self.base_dir / "log" / f"{self.nodename}.log"
        self._epmd: _Child | None = None
        self._env = self._prepare()

    def vhost_url(self, vhost: str) -> str:
        """The AMQP URL of a vhost on this node."""
        return self.url if vhost == "/" else self.url + quote(vhost, safe="")

    def stop(self) -> None:
        """Stop the node (SIGTERM: RabbitMQ's graceful shutdown), then its epmd."""
        super().stop()
        if self._epmd is not None:
            self._epmd.terminate(self.stop_timeout)
            self._epmd = None

    def restart(self) -> None:
        """Stop the node gracefully and start it again with the same data, ports and epmd."""
        super().stop()
        self.start()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -q ARGS`` against this node and return its standard output."""
        argv = [self._rabbitmqctl, "-n", self.nodename, "-q", *args]
        try:
            done = subprocess.run(
                argv, env=self._env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"rabbitmqctl {' '.join(args)} took over {timeout} s") from exc
        if done.returncode != 0:
            raise ServiceError(
                f"rabbitmqctl {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def add_vhost(self, vhost: str) -> None:
        """Create a vhost on which guest may configure, write and read everything."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        """Delete a vhost with its queues, exchanges and connections."""
        self.ctl("delete_vhost", vhost)

    def _spawn(self) -> _Child:
        if self._epmd is None or not self._epmd.running():
            # Our own epmd, up before the node, so Erlang never daemonizes one outside our group.
            epmd_log = self.base_dir / "epmd.log"
            argv = [self._epmd_program, "-port", str(self.epmd_port), "-address", LOOPBACK]
            self._epmd = _Child(argv, self._env, epmd_log)
            _wait_until(lambda: _port_accepts(self.epmd_port), self._epmd, 10, "epmd", [epmd_log])
        return _Child([self._server_program], self._env, self.console_log)

    def _answers(self) -> bool:
        if self.prometheus_port is not None and not _port_accepts(self.prometheus_port):
            return False
        return amqp_greets(self.port)

    def _logs(self) -> list[Path]:
        return [self.console_log, self.node_log]

    def _prepare(self) -> dict[str, str]:
        """Write the node's files and return the environment for the node, epmd and rabbitmqctl."""
        home = self.base_dir / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.base_dir / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        (self.base_dir / "rabbitmq-env.conf").write_text("")
        if self.prometheus_port is not None:
            (self.base_dir / "rabbitmq.conf").write_text(
                f"prometheus.tcp.ip = {LOOPBACK}\nprometheus.tcp.port = {self.prometheus_port}\n"
            )
        lean_home = _lean_rabbitmq_home(
            Path(self._server_program), self.base_dir / "rabbitmq-home", self.plugins
        )
        scripts_dir = {} if lean_home is None else {"RABBITMQ_SCRIPTS_DIR": str(lean_home / "sbin")}
        return _clean_env(
            **scripts_dir,
            HOME=str(home),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=LOOPBACK,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base_dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base_dir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
            # Files of ours, so nothing under /etc/rabbitmq applies. Without plugins the node needs
            # no settings: the config files are left absent, which also skips the schema pass.
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=_DIST_ON_LOOPBACK,
            RABBITMQ_CTL_ERL_ARGS=_DIST_ON_LOOPBACK,
            ERL_EPMD_ADDRESS=LOOPBACK,
            ERL_EPMD_PORT=str(self.epmd_port),
        )

    def __repr__(self) -> str:
        return f"RabbitMQNode({self.nodename}, {self.url})"


@dataclass(frozen=True)
class Vhost:
    """A vhost on the test broker and the AMQP URL that opens it."""

    name: str
    url: str


class VhostPool:
    """Hands out fresh, empty vhosts; creates the next one and deletes used ones in the background.

    Each ``rabbitmqctl`` call boots an Erlang VM (about 0.35 s); doing them while the tests run
    keeps a fresh vhost per test nearly free.
    """

    def __init__(self, node: RabbitMQNode) -> None:
        self._node = node
        self._numbers = itertools.count(1)
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vhost-pool")
        self._next: Future[str] | None = None

    def take(self) -> Vhost:
        """An empty vhost that nobody else has been given; guest may do anything in it."""
        name: str | None = None
        if self._next is not None:
            with contextlib.suppress(ServiceError):  # e.g. the broker restarted meanwhile
                name = self._next.result()
        if name is None:
            name = self._create()
        self._next = self._background.submit(self._create)
        return Vhost(name, self._node.vhost_url(name))

    def give_back(self, vhost: Vhost) -> None:
        """Delete the vhost in the background; a failure only leaves an unused vhost behind."""
        self._background.submit(self._delete_quietly, vhost.name)

    def close(self) -> None:
        """Wait for the background work (the broker must still be up for it to succeed)."""
        self._background.shutdown(wait=True, cancel_futures=True)

    def _create(self) -> str:
        name = f"test-{next(self._numbers)}"
        self._node.add_vhost(name)
        return name

    def _delete_quietly(self, name: str) -> None:
        with contextlib.suppress(ServiceError):
            self._node.delete_vhost(name)


class RedisServer(_Service):
    """One Redis on 127.0.0.1; by default it keeps every acknowledged write in an fsynced AOF.

    ``appendonly`` / ``appendfsync`` / ``maxmemory_policy`` choose its durability (the tests of
    the durability report start the weak ones); ``extra`` adds command-line options (a replica's
    ``--replicaof``, cluster mode).
    """

    name = "redis"

    def __init__(
        self,
        *,
        databases: int = 16,
        appendonly: bool = True,
        appendfsync: str = "always",
        maxmemory_policy: str = "noeviction",
        extra: tuple[str, ...] = (),
        start_timeout: float = 30.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self._program = executable("redis-server", "redis-server")
        super().__init__(start_timeout, stop_timeout)
        self.port = free_port()
        self.databases = databases
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.maxmemory_policy = maxmemory_policy
        self.extra = extra
        self.url = self.db_url(0)
        self.log = self.base_dir / "redis.log"

    def db_url(self, index: int) -> str:
        """The URL of one numbered database."""
        return f"redis://{LOOPBACK}:{self.port}/{index}"

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open and nothing answers (a hung Redis)."""
        if self._process is not None:
            os.killpg(self._process.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._process is not None:
            os.killpg(self._process.process.pid, signal.SIGCONT)

    def wipe(self) -> None:
        """Stop the server and delete its data: the next start is empty (a Redis lost its disk)."""
        self.stop()
        for path in self.base_dir.iterdir():
            if path != self.log:
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _spawn(self) -> _Child:
        argv = [
            self._program,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.base_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", self.maxmemory_policy,
            "--databases", str(self.databases),
            *self.extra,
        ]  # fmt: skip
        return _Child(argv, _clean_env(), self.log)

    def _answers(self) -> bool:
        return redis_pongs(self.port)

    def _logs(self) -> list[Path]:
        return [self.log]

    def __repr__(self) -> str:
        return f"RedisServer({self.url})"


class PrometheusServer(_Service):
    """Debian's ``prometheus`` on 127.0.0.1 with a configuration and rule files of the test's.

    ``files`` maps names to contents written beside the configuration (rule files, which the
    configuration names relative to its own directory).
    """

    name = "prometheus"

    def __init__(
        self,
        config: str,
        files: dict[str, str] | None = None,
        *,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self._program = executable("prometheus", "prometheus")
        super().__init__(start_timeout, stop_timeout)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log = self.base_dir / "prometheus.log"
        self.config_file = self.base_dir / "prometheus.yml"
        self.config_file.write_text(config)
        for name, content in (files or {}).items():
            (self.base_dir / name).write_text(content)

    def _spawn(self) -> _Child:
        argv = [
            self._program,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.base_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        return _Child(argv, _clean_env(), self.log)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=2) as sock:
                sock.sendall(b"GET /-/ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return _recv_exactly(sock, 12).endswith(b" 200")
        except OSError:
            return False

    def _logs(self) -> list[Path]:
        return [self.log]

    def __repr__(self) -> str:
        return f"PrometheusServer({self.url})"


def redis_cli(port: int, *args: str, timeout: float = 30.0) -> str:
    """Run ``redis-cli -h 127.0.0.1 -p PORT ARGS`` and return its output."""
    argv = [executable("redis-cli", "redis-tools"), "-h", LOOPBACK, "-p", str(port), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"redis-cli {' '.join(args)} took over {timeout} s") from exc
    if done.returncode != 0:
        raise ServiceError(f"redis-cli {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


class RedisSentinel(_Service):
    """One Sentinel (``redis-server --sentinel``) watching ``master_name`` at ``master_port``."""

    name = "redis-sentinel"

    def __init__(
        self, master_name: str, master_port: int, quorum: int, *, start_timeout: float = 30.0
    ) -> None:
        self._program = executable("redis-server", "redis-server")
        super().__init__(start_timeout, 10.0)
        self.port = free_port()
        self.log = self.base_dir / "sentinel.log"
        self.config = self.base_dir / "sentinel.conf"
        # Sentinel rewrites this file as it learns the topology; it is written once, here.
        self.config.write_text(
            f"port {self.port}\n"
            f"bind {LOOPBACK}\n"
            f"dir {self.base_dir}\n"
            f"sentinel monitor {master_name} {LOOPBACK} {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master_name} 1000\n"
            f"sentinel failover-timeout {master_name} 10000\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )

    def _spawn(self) -> _Child:
        return _Child([self._program, str(self.config), "--sentinel"], _clean_env(), self.log)

    def _answers(self) -> bool:
        return redis_pongs(self.port)

    def _logs(self) -> list[Path]:
        return [self.log]

    def __repr__(self) -> str:
        return f"RedisSentinel(127.0.0.1:{self.port})"


class RedisSentinelGroup:
    """A master, a replica and three sentinels on loopback: ``.url`` is its redis+sentinel URL."""

    master_name = "wecom"

    def __init__(self) -> None:
        self.servers = [RedisServer(appendonly=False)]
        first = self.servers[0]
        self.servers.append(
            RedisServer(appendonly=False, extra=("--replicaof", LOOPBACK, str(first.port)))
        )
        self.sentinels = [RedisSentinel(self.master_name, first.port, 2) for _ in range(3)]
        hosts = ",".join(f"{LOOPBACK}:{sentinel.port}" for sentinel in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{self.master_name}/0"

    def start(self) -> None:
        """Start the servers, wait for the replica to sync, then start the sentinels."""
        for server in self.servers:
            server.start()
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in redis_cli(self.servers[1].port, "info", "replication"):
            if time.monotonic() > deadline:
                raise ServiceError("the Sentinel group's replica did not sync with its master")
            time.sleep(0.05)
        for sentinel in self.sentinels:
            sentinel.launch()
        for sentinel in self.sentinels:
            sentinel.wait_ready()
        self.wait_for_sentinels()

    def master_port(self) -> int:
        """The port of the master as the first sentinel sees it."""
        answer = redis_cli(
            self.sentinels[0].port, "sentinel", "get-master-addr-by-name", self.master_name
        )
        return int(answer.split()[1])

    def wait_for_sentinels(self, timeout: float = 30.0) -> None:
        """Until every sentinel knows the replica and the other sentinels (a failover can run)."""
        deadline = time.monotonic() + timeout
        for sentinel in self.sentinels:
            while True:
                info = redis_cli(sentinel.port, "sentinel", "master", self.master_name).split()
                fields = dict(zip(info[::2], info[1::2], strict=False))
                if fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2":
                    break
                if time.monotonic() > deadline:
                    raise ServiceError(f"{sentinel!r} did not discover its group: {fields}")
                time.sleep(0.1)

    def failover(self, timeout: float = 30.0) -> int:
        """Make the replica the master (SENTINEL FAILOVER); returns the new master's port."""
        old = self.master_port()
        redis_cli(self.sentinels[0].port, "sentinel", "failover", self.master_name)
        deadline = time.monotonic() + timeout
        while True:
            new = self.master_port()
            role = redis_cli(new, "role").split()
            if new != old and role and role[0] == "master":
                return new
            if time.monotonic() > deadline:
                raise ServiceError("the Sentinel failover did not finish")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop everything and delete the data."""
        for service in [*self.sentinels, *self.servers]:
            service.close()


class RedisClusterGroup:
    """Three Redis Cluster masters on loopback (no replicas); ``.url`` is a redis+cluster URL."""

    def __init__(self) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
        # The bus port is set too: by default it is the port + 10000, which may be in the
        # kernel's ephemeral range and taken by some outgoing connection.
        self.bus_ports = [free_port() for _ in range(3)]
        self.servers = [
            RedisServer(databases=1, extra=(*options, "--cluster-port", str(bus_port)))
            for bus_port in self.bus_ports
        ]
        hosts = ",".join(f"{LOOPBACK}:{server.port}" for server in self.servers)
        self.url = f"redis+cluster://{hosts}"

    def start(self) -> None:
        """Start the nodes, join them into one cluster, wait until every slot is served."""
        for server in self.servers:
            server.launch()
        for server in self.servers:
            server.wait_ready()
        nodes = [f"{LOOPBACK}:{server.port}" for server in self.servers]
        redis_cli(self.servers[0].port, "--cluster", "create", *nodes, "--cluster-yes")
        deadline = time.monotonic() + 30
        for server in self.servers:
            while "cluster_state:ok" not in redis_cli(server.port, "cluster", "info"):
                if time.monotonic() > deadline:
                    raise ServiceError(f"{server!r} did not see the cluster's slots covered")
                time.sleep(0.05)

    def close(self) -> None:
        """Stop the nodes and delete their data."""
        for server in self.servers:
            server.close()
