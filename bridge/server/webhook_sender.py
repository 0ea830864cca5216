"""Delivers call webhooks from the outbox: at least once, with backoff, surviving restarts.

Events are written to the record database in the same transaction as the record change that
caused them (:meth:`~bridge.accounting.store.SqliteRecordStore.finish`), so a worker that dies a
moment later loses nothing. One sender per service (in the supervisor) reads the due ones,
POSTs each (signed like tool requests, the same body on every attempt), and marks it delivered
on a 2xx; anything else is retried with exponential backoff until ``webhooks.retry_horizon_s``
after the event was created, then marked failed (``bridge webhooks`` lists those). A receiver
must expect an event more than once (it has one id, ``X-Bridge-Event-Id``) and deduplicate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from bridge import metrics
from bridge.accounting.store import OutboxRow, RecordStore
from bridge.accounting.webhooks import retry_delay
from bridge.config import WebhooksSettings
from bridge.httpmsg import HttpRequest
from bridge.outbound import Outbound

log = structlog.get_logger("bridge.webhooks")

POLL_S = 1.0
BATCH = 50
CONCURRENCY = 8


class WebhookSender:
    def __init__(self, store: RecordStore, outbound: Outbound, settings: Callable[[], WebhooksSettings]) -> None:
        self.store = store
        self.outbound = outbound
        self.settings = settings  # read at each attempt: a reload changes timeouts and backoff
        self._limit = trio.CapacityLimiter(CONCURRENCY)
        self._wake = trio.Event()

    def kick(self) -> None:
        """Look for due events now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            if await self.deliver_due() == BATCH:
                continue  # more may be due at once
            with trio.move_on_after(POLL_S):
                await self._wake.wait()
            self._wake = trio.Event()

    async def deliver_due(self) -> int:
        """One round: attempt every event that is due (up to a batch). Returns how many."""
        try:
            rows = await trio.to_thread.run_sync(self.store.due, time.time(), BATCH)
            counts = await trio.to_thread.run_sync(self.store.outbox_counts)
        except Exception as exc:  # a locked or broken database must not stop the sender for good
            log.error("webhook_outbox_unreadable", error=repr(exc))
            return 0
        metrics.webhooks_pending.set(counts["pending"])
        async with trio.open_nursery() as nursery:
            for row in rows:
                nursery.start_soon(self._deliver, row)
        return len(rows)

    async def _deliver(self, row: OutboxRow) -> None:
        settings = self.settings()
        request = HttpRequest(
            "POST",
            row.endpoint,
            (
                ("Content-Type", "application/json"),
                ("X-Bridge-Event-Id", row.event_id),
                ("X-Bridge-Event-Type", row.type),
            ),
            row.body,
            settings.timeout_s,
            sign=True,
        )
        async with self._limit:
            result = await self.outbound.send(request)
        now = time.time()
        try:
            if result.ok:
                await trio.to_thread.run_sync(self.store.delivered, row.event_id, row.endpoint, now)
                metrics.webhook_deliveries_total.labels(outcome="delivered").inc()
                log.info("webhook_delivered", event_id=row.event_id, endpoint=row.endpoint, attempts=row.attempts + 1)
                return
            error = f"HTTP {result.status}" if result.status is not None else f"{result.failure}: {result.detail}"
            wait = retry_delay(row.attempts + 1, settings.retry_initial_s, settings.retry_max_s)
            if now + wait > row.created_at + settings.retry_horizon_s:
                await trio.to_thread.run_sync(self.store.give_up, row.event_id, row.endpoint, error)
                metrics.webhook_deliveries_total.labels(outcome="failed").inc()
                log.error("webhook_failed", event_id=row.event_id, endpoint=row.endpoint, error=error)
                return
            await trio.to_thread.run_sync(self.store.retry_later, row.event_id, row.endpoint, now + wait, error)
            metrics.webhook_deliveries_total.labels(outcome="retried").inc()
            log.warning("webhook_retry", event_id=row.event_id, endpoint=row.endpoint, error=error, retry_in_s=wait)
        except Exception as exc:  # the row stays pending; the next round tries again
            log.error("webhook_outbox_write_failed", event_id=row.event_id, error=repr(exc))
