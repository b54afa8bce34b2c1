"""wecom-card-worker: RabbitMQ card-update commands to WeCom update_template_card calls."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wecom-card-worker")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
