"""The Faust app: configuration from Settings, resources built when the app starts.

Topics (declared once, ``agents.topics``) carry raw bytes; agents decode Avro themselves
through the consume loop (``agents.consume``) so that an undecodable message becomes a dead
letter instead of an exception inside Faust.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import faust
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.topics import Topics, declare_topics
from infra.avro import RegistryCodec, codec_from_settings
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.documents import DocumentStore
from infra.kafka import EventPublisher
from infra.logging import get_logger
from infra.metrics import DECODE_MEMO_LOOKUPS
from infra.providers.base import PayoutProvider
from infra.providers.stripe import StripeClient
from infra.providers.wise import WiseClient
from infra.settings import Settings

log = get_logger(__name__)


@dataclass
class Resources:
    settings: Settings
    codec: RegistryCodec
    publisher: EventPublisher
    engine: AsyncEngine
    vault: RecipientVault
    documents: DocumentStore
    stripe: PayoutProvider | None
    wise: PayoutProvider | None


class SpaceMusicApp(faust.App):
    """A Faust app that owns the project's adapters for the lifetime of the worker."""

    settings: Settings
    lifecycle_topics: Topics  # faust.App has its own `topics` (the conductor)
    _resources: Resources | None = None
    _exit_stack: contextlib.AsyncExitStack | None = None

    @property
    def resources(self) -> Resources:
        if self._resources is None:
            raise RuntimeError("resources are built when the app starts")
        return self._resources

    async def on_start(self) -> None:
        await super().on_start()
        settings = self.settings
        stack = contextlib.AsyncExitStack()
        self._exit_stack = stack
        # The agents of one worker share decodes (see DecodedMemo).
        codec = codec_from_settings(settings, settings.worker_decode_memo_entries)
        memo = codec.memo
        if memo is not None:
            DECODE_MEMO_LOOKUPS.labels(result="hit").set_function(lambda: memo.hits)
            DECODE_MEMO_LOOKUPS.labels(result="miss").set_function(lambda: memo.misses)
        await codec.register_all()
        publisher = EventPublisher(settings, codec)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        documents = await stack.enter_async_context(DocumentStore.from_settings(settings))
        await documents.ensure_bucket()
        timeout = settings.payout_provider_timeout_seconds
        stripe = wise = None
        if settings.stripe_api_key:
            stripe = await stack.enter_async_context(
                StripeClient(settings.stripe_api_base, settings.stripe_api_key.get_secret_value(), timeout)
            )
        if settings.wise_token and settings.wise_profile_id:
            wise = await stack.enter_async_context(
                WiseClient(
                    settings.wise_api_base, settings.wise_token.get_secret_value(), settings.wise_profile_id, timeout
                )
            )
        self._resources = Resources(
            settings, codec, publisher, engine, RecipientVault.from_settings(settings), documents, stripe, wise
        )
        log.info("worker_resources_ready", stripe=stripe is not None, wise=wise is not None, **settings.safe_summary())

    async def on_stop(self) -> None:
        if self._resources is not None and (memo := self._resources.codec.memo) is not None:
            log.info("decode_memo", hits=memo.hits, misses=memo.misses)
        self._resources = None
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
            self._exit_stack = None
        await super().on_stop()


# Which agents a worker process runs. Splitting them keeps CPU-heavy PDF rendering and
# slow provider calls from delaying valuation and the deal stream; each role is its own
# consumer group, so run either "all" or the separate roles, not both.
ROLES: dict[str, tuple[str, ...]] = {
    "all": ("valuation", "projector", "payouts", "documents", "lapse"),
    # lapse: the offers-lapse sweep (a timer, no consumer), next to the projector it reads.
    "pipeline": ("valuation", "projector", "lapse"),
    "payouts": ("payouts",),
    "documents": ("documents",),
}


def create_app(settings: Settings, role: str = "all", **overrides: Any) -> SpaceMusicApp:
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap_servers}",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "store": "memory://",
        "web_enabled": False,
        "topic_disable_leader": True,
        "topic_allow_declare": False,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "broker_commit_every": 100,
        "broker_commit_interval": 1.0,
        "stream_wait_empty": False,
        "autodiscover": False,
        "datadir": "/tmp/spacemusic-faust",
    }
    options.update(overrides)
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r}; one of {', '.join(ROLES)}")
    app = SpaceMusicApp(settings.consumer_group("workers" if role == "all" else f"workers-{role}"), **options)
    app.settings = settings
    app.lifecycle_topics = declare_topics(app)

    @app.on_partitions_assigned.connect
    async def _log_assignment(sender: object, assigned: set[Any], **_: Any) -> None:
        # Operators (and the test suite) read this line as "the worker is consuming".
        log.info("partitions_assigned", count=len(assigned))

    from agents import documents, lapse, payouts, projector, valuation  # registration needs the app

    modules = {
        "valuation": valuation,
        "projector": projector,
        "payouts": payouts,
        "documents": documents,
        "lapse": lapse,
    }
    for name in ROLES[role]:
        modules[name].register(app)
    return app
