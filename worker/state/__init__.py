"""State stores: where used response codes and outcomes are kept.

``sqlite:///PATH`` for one replica (:mod:`worker.state.sqlite`),
``redis://HOST:PORT/DB`` for many (:mod:`worker.state.redis`).
"""

from __future__ import annotations

from worker.errors import SettingsError
from worker.ports import StateStore
from worker.settings import Settings, sqlite_path


async def open_store(settings: Settings) -> StateStore:
    """The store WECOM_STATE_URL names, opened and ready."""
    url = settings.state_url
    if url.startswith("sqlite:"):
        from worker.state.sqlite import SqliteStateStore  # noqa: PLC0415 - per-backend import

        return await SqliteStateStore.open(
            sqlite_path(url),
            owner=settings.instance_id,
            lease_seconds=settings.claim_lease,
            synchronous=settings.sqlite_synchronous,
        )
    raise SettingsError("WECOM_STATE_URL", f"no state store for {settings.state_url_safe}")
