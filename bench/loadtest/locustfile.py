"""Locust profile for the critical endpoints: POST /offers, GET /deals?limit=20, GET /offers/{id}.

Open-model pacing: every user runs at ``LOADTEST_USER_RPS`` requests a second
(``constant_throughput``), so ``users x LOADTEST_USER_RPS`` is the offered rate whatever the
latency (up to the point where a user cannot keep up, which the report then shows). The
bearer token comes from ``LOADTEST_TOKEN`` (``bench/loadtest/run.py`` mints one).

    locust -f bench/loadtest/locustfile.py --headless -u 100 -r 100 -t 60s --host http://127.0.0.1:8080
"""

from __future__ import annotations

import csv
import os
import random
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

HISTORY = [{"period": f"2025-{m:02d}", "amount_minor": 200_000 + 5_000 * m} for m in range(1, 13)]
USER_RPS = float(os.environ.get("LOADTEST_USER_RPS", "10"))
_environment: Any = None


@events.init.add_listener
def _remember_environment(environment: Any, **_: Any) -> None:
    global _environment
    _environment = environment


@events.quit.add_listener
def _write_final_stats(**_: Any) -> None:
    # locust's --csv file is written every second while running, not once more at the end:
    # the gate reads these, taken after the last request.
    path = os.environ.get("LOADTEST_FINAL_STATS")
    if path and _environment is not None:
        with open(path, "w", newline="") as out:
            StatsCSV(_environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(out))


class ApiUser(FastHttpUser):
    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        self.auth = {"Authorization": f"Bearer {os.environ['LOADTEST_TOKEN']}"}
        with self.client.post(
            "/creators", json={"display_name": "Load test"}, headers=self.auth, name="setup /creators"
        ) as resp:
            self.creator_id = resp.json()["creator_id"]
        self.offer_ids: list[str] = []

    @task(2)
    def post_offer(self) -> None:
        body = {"creator_id": self.creator_id, "currency": "EUR", "royalty_history": HISTORY}
        with self.client.post("/offers", json=body, headers=self.auth, name="/offers", catch_response=True) as resp:
            if resp.status_code == 202 or resp.status_code == 201:
                self.offer_ids = ([resp.json()["offer_id"]] + self.offer_ids)[:50]
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}")

    @task(2)
    def list_deals(self) -> None:
        self.client.get("/deals?limit=20", headers=self.auth, name="/deals?limit=20")

    @task(1)
    def get_offer(self) -> None:
        if not self.offer_ids:
            return self.post_offer()
        # A just-posted offer may not be projected yet: 404 is the API's honest answer then,
        # so only the older half of this user's offers is asked for once it has some.
        pool = self.offer_ids[len(self.offer_ids) // 2 :] or self.offer_ids
        offer_id = random.choice(pool)
        with self.client.get(
            f"/offers/{offer_id}", headers=self.auth, name="/offers/{id}", catch_response=True
        ) as resp:
            if resp.status_code in (200, 404):
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}")
