"""Rebuild the deal projections from the event log beside the live ones, compare, swap.

``report`` (what a run reports), ``reading`` (the log into the shadow: read and catch-up),
``workers`` (the read phase over processes), ``shadow`` (the shadow tables), ``compare``,
``swap`` and ``run`` (the phases in order). Nothing here produces to Kafka, calls a
provider or renders a document: the rebuild reads Kafka and writes projection tables only.
"""

from projections.projector import LIVE_CONSUMER
from projections.rebuild.compare import EVENTS_SPEC, OFFERS_SPEC, canonical_hashes, compare_table, table_hash
from projections.rebuild.report import (
    PartitionSpan,
    ReadResult,
    RebuildError,
    RebuildOptions,
    RebuildReport,
    RowDiff,
    SkippedMessage,
    TableComparison,
)
from projections.rebuild.run import rebuild_projections
from projections.rebuild.swap import CORRECTION_EVENT_TYPE

__all__ = [
    "CORRECTION_EVENT_TYPE",
    "EVENTS_SPEC",
    "LIVE_CONSUMER",
    "OFFERS_SPEC",
    "PartitionSpan",
    "ReadResult",
    "RebuildError",
    "RebuildOptions",
    "RebuildReport",
    "RowDiff",
    "SkippedMessage",
    "TableComparison",
    "canonical_hashes",
    "compare_table",
    "rebuild_projections",
    "table_hash",
]
