"""The garbage collector's settings for long-running processes.

CPython starts a young-generation collection every 700 container allocations, and every
collection walks all the young objects; the pipeline allocates a few dozen per event
(royalty months, rows, dicts), so at the default a worker spent about as much time
collecting as decoding (an offer's decode: ~50 µs at the default, ~20 µs at 50,000).
Reference counting frees almost all of it anyway; the collector is only needed for
reference cycles, and a larger threshold finds those later, not never. Freezing what start-up built (modules, the app, the
registry's schemas) also keeps it out of every later full collection.
"""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Collect the young generation every ``gen0_threshold`` allocations (0: Python's
    default) and exclude everything allocated so far from future collections."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
