"""The WeCom apps the worker holds credentials for, and how a command picks one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from worker.errors import UnknownApp


@dataclass(frozen=True, slots=True)
class App:
    """One WeCom app: its corp, its agentid and the secret gettoken needs.

    ``repr`` never shows the secret.
    """

    corp_id: str
    agentid: int
    secret: str = field(repr=False)

    @property
    def label(self) -> str:
        """``corp_id/agentid``, safe to log."""
        return f"{self.corp_id}/{self.agentid}"


class AppRegistry:
    """Apps by (corp_id, agentid); a command may omit corp_id when there is exactly one corp."""

    def __init__(self, apps: list[App]) -> None:
        self._apps = {(app.corp_id, app.agentid): app for app in apps}
        self.corp_ids = tuple(sorted({app.corp_id for app in apps}))

    def __len__(self) -> int:
        return len(self._apps)

    def __iter__(self) -> Iterator[App]:
        return iter(self._apps.values())

    def resolve(self, corp_id: str | None, agentid: int) -> App:
        """The app for a command, or :class:`UnknownApp` saying what is missing."""
        if corp_id is None:
            if len(self.corp_ids) != 1:
                raise UnknownApp(
                    "corp_id is required: the worker serves several corps "
                    f"({', '.join(self.corp_ids)})"
                )
            corp_id = self.corp_ids[0]
        app = self._apps.get((corp_id, agentid))
        if app is not None:
            return app
        if corp_id not in self.corp_ids:
            raise UnknownApp(f"no credentials for corp_id {corp_id!r}")
        agents = sorted(a for c, a in self._apps if c == corp_id)
        raise UnknownApp(
            f"no credentials for agentid {agentid} of corp {corp_id!r} "
            f"(configured: {', '.join(map(str, agents))})"
        )
