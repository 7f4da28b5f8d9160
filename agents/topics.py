"""The Faust topics of this app, declared once.

Agents receive raw bytes (the app's value serializer is ``raw``) and decode Avro themselves
through the consume loop, so an undecodable message becomes a dead letter instead of an
exception inside Faust. Physical names carry the settings' namespace (tests isolate
themselves with one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.events import LIFECYCLE_EVENTS, Event


@dataclass(frozen=True)
class Topics:
    by_event: dict[type[Event], Any]  # one faust topic per lifecycle event
    lifecycle: Any  # every lifecycle topic at once (the projector reads them all)

    def of(self, event: type[Event]) -> Any:
        return self.by_event[event]


def declare_topics(app: Any) -> Topics:
    settings = app.settings
    return Topics(
        by_event={cls: app.topic(settings.topic(cls.TOPIC)) for cls in LIFECYCLE_EVENTS},
        lifecycle=app.topic(*[settings.topic(cls.TOPIC) for cls in LIFECYCLE_EVENTS]),
    )
