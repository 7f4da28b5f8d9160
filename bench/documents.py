"""Documents: PDFs per second for one process, the seed's renderer against the render pool.

Both paths render the same distinct term sheets and receipts in the same run:

- **seed**: the renderer as it was before the pool, kept verbatim here as the peer: a fresh
  WeasyPrint font configuration per document, the inline stylesheet parsed every time, in a
  thread of this process (``asyncio.to_thread``), one document after another as the
  documents agent awaits them;
- **pool, one at a time**: ``RenderPool`` (recycled worker processes, shared font
  configuration and parsed stylesheet), awaited one after another (the per-render gain);
- **pool, concurrent**: the same pool with every document submitted at once (what a
  batching agent gets: all cores).

Every pool document is compared byte for byte with the seed's. Prints PDFs/s, CPU ms per
PDF (this process plus its children), this process's RSS growth, the ratios and the load
average. Usage: ``python bench/documents.py [--documents 60] [--workers N]``. Needs no stack.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.documents.pool import RenderPool, available_cores  # noqa: E402
from infra.documents.render import render_receipt_html, render_termsheet_html  # noqa: E402
from models.documents import ReceiptData, TermsheetData  # noqa: E402

ISSUED = datetime(2025, 3, 3, 14, 5, 12, tzinfo=UTC)


def seed_write_pdf(html: str, created_at: datetime) -> bytes:
    """The seed's ``_write_pdf``, verbatim in effect."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = HTML(string=html, url_fetcher=URLFetcher(allowed_protocols=())).render()
    document.metadata.created = stamp
    document.metadata.modified = stamp
    identifier = hashlib.sha256(f"{stamp}\n{html}".encode()).hexdigest()[:32].encode("ascii")
    pdf = document.write_pdf(pdf_identifier=identifier)
    assert pdf is not None
    return pdf


def documents(count: int) -> list[tuple[str, datetime]]:
    """Distinct inputs: three term sheets to one receipt, amounts and names varying."""
    out: list[tuple[str, datetime]] = []
    for i in range(count):
        offer_id = f"bench-{i:05d}"
        if i % 4 == 3:
            paid = ISSUED + timedelta(days=4, minutes=i)
            data = ReceiptData(
                offer_id=offer_id,
                creator_id=f"Creator {i}",
                payout_id=f"payout-{i:05d}",
                amount_minor=1_000_000 + 137 * i,
                currency="EUR",
                provider="STRIPE" if i % 8 else "WISE",
                provider_reference=f"tr_{i:012d}",
                paid_at=paid,
                recipient_label=f"IBAN •••• {1000 + i % 9000}",
            )
            out.append((render_receipt_html(data), paid))
        else:
            issued = ISSUED + timedelta(minutes=i)
            advance = 2_000_000 + 1_013 * i
            term = TermsheetData(
                offer_id=offer_id,
                creator_id=f"Creator {i}" if i % 2 else f"{i:08d}-8d1e-4b7a-9a55-1c2d3e4f5a6b",
                currency="GBP" if i % 5 == 0 else "EUR",
                advance_minor=advance,
                low_minor=advance * 3 // 4,
                high_minor=advance * 5 // 4,
                median_monthly_royalty_minor=advance // 24,
                months_considered=12 + i % 25,
                model_version="median-multiple-v1",
                issued_at=issued,
                valid_until=issued + timedelta(days=30),
            )
            out.append((render_termsheet_html(term), issued))
    return out


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped (recycled) workers only
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + _live_children_cpu()


def _live_children_cpu() -> float:
    """CPU of descendants still running (the forkserver and its pool workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        # utime + stime, plus the reaped children's cutime + cstime (recycled workers)
        cpu[int(entry.name)] = sum(int(x) for x in fields[11:15]) / tick
    me, total = os.getpid(), 0.0
    for pid in parents:
        ancestor = parents[pid]
        while ancestor not in (0, 1, me) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == me:
            total += cpu[pid]
    return total


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run_seed(docs: list[tuple[str, datetime]]) -> tuple[float, float, float, list[bytes]]:
    await asyncio.to_thread(seed_write_pdf, *docs[0])  # import and first-use costs excluded
    rss0, cpu0, t0 = rss_mib(), cpu_seconds(), time.perf_counter()
    out = [await asyncio.to_thread(seed_write_pdf, html, at) for html, at in docs]
    return time.perf_counter() - t0, cpu_seconds() - cpu0, rss_mib() - rss0, out


async def run_pool(
    pool: RenderPool, docs: list[tuple[str, datetime]], concurrent: bool
) -> tuple[float, float, list[bytes]]:
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    if concurrent:
        out = list(await asyncio.gather(*(pool.render(html, at) for html, at in docs)))
    else:
        out = [await pool.render(html, at) for html, at in docs]
    return time.perf_counter() - t0, cpu_seconds() - cpu0, out


async def main_async(count: int, workers: int | None, max_tasks: int) -> int:
    docs = documents(count)
    print(f"documents: {count} distinct ({count - count // 4} term sheets, {count // 4} receipts); {load()}")
    seed_wall, seed_cpu, seed_rss, seed_out = await run_seed(docs)
    seed_rate = count / seed_wall
    print(
        f"seed (thread, fresh fonts + stylesheet each) : {seed_rate:6.1f} PDFs/s  "
        f"{1000 * seed_cpu / count:5.0f} ms CPU/PDF  RSS +{seed_rss:.0f} MiB; {load()}"
    )
    async with RenderPool(workers=workers, max_tasks_per_child=max_tasks) as pool:
        await asyncio.gather(*(pool.render(*docs[0]) for _ in range(pool.workers)))  # start + warm the workers
        rss0 = rss_mib()
        one_wall, one_cpu, one_out = await run_pool(pool, docs, concurrent=False)
        all_wall, all_cpu, all_out = await run_pool(pool, docs, concurrent=True)
        rss = rss_mib() - rss0
        label = f"{pool.workers} workers, recycled every {max_tasks}"
    one_rate, all_rate = count / one_wall, count / all_wall
    print(f"pool ({label}), one at a time : {one_rate:6.1f} PDFs/s  {1000 * one_cpu / count:5.0f} ms CPU/PDF; {load()}")
    print(
        f"pool ({label}), concurrent    : {all_rate:6.1f} PDFs/s  {1000 * all_cpu / count:5.0f} ms CPU/PDF  "
        f"caller RSS +{rss:.0f} MiB; {load()}"
    )
    same = sum(a == b == c for a, b, c in zip(seed_out, one_out, all_out, strict=True))
    print(f"byte-identical to the seed: {same}/{count}")
    print(f"ratio pool/seed (wall): one at a time {one_rate / seed_rate:.2f}x, concurrent {all_rate / seed_rate:.2f}x")
    # Wall rates follow whatever else the machine runs; CPU per PDF does not. A process on
    # `workers` idle cores renders workers / CPU-per-PDF documents a second.
    cores = min(workers or available_cores(), available_cores())
    seed_capacity, pool_capacity = count / seed_cpu, cores * count / all_cpu
    print(
        f"capacity on idle cores (from CPU/PDF): seed {seed_capacity:.1f} PDFs/s (one core: its thread holds the GIL), "
        f"pool {pool_capacity:.1f} PDFs/s on {cores} cores; ratio {pool_capacity / seed_capacity:.2f}x"
    )
    return 0 if same == count else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=60)
    parser.add_argument(
        "--workers", type=int, default=None, help=f"pool size (default: the cores, {available_cores()})"
    )
    parser.add_argument("--max-tasks-per-child", type=int, default=200)
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args.documents, args.workers, args.max_tasks_per_child)))


if __name__ == "__main__":
    main()
