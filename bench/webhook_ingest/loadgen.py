"""Load generator (its own process): POSTs bodies for a while, records each latency.

    python bench/webhook_ingest/loadgen.py URL BODIES.json SECONDS CONCURRENCY [RATE]

Prints one JSON object: sent, ok, statuses, latencies_ms (sorted).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import requests


def main() -> None:
    url, bodies_file, seconds, concurrency = (
        sys.argv[1],
        sys.argv[2],
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0  # total requests/s; 0 = flat out
    with open(bodies_file) as handle:
        bodies = json.load(handle)
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counter = {"next": 0}
    deadline = time.monotonic() + seconds
    start = time.monotonic()

    def worker() -> None:
        session = requests.Session()
        session.trust_env = False
        while True:
            with lock:
                index = counter["next"]
                counter["next"] += 1
            if index >= len(bodies) or time.monotonic() > deadline:
                return
            if rate:
                due = start + index / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            t0 = time.perf_counter()
            try:
                response = session.post(
                    url,
                    data=bodies[index],
                    headers={"Content-Type": "application/json"},
                    timeout=10,
                )
                status = str(response.status_code)
            except requests.RequestException as exc:
                status = type(exc).__name__
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    print(
        json.dumps(
            {
                "sent": len(latencies),
                "wall": wall,
                "statuses": statuses,
                "latencies_ms": sorted(latencies),
            }
        )
    )


if __name__ == "__main__":
    main()
