"""Cost of 10,000 kirby.cron.next_fire computations next to croniter's raw cost, in the same run.

Run: .venv/bin/python bench/cron.py      (not a test; prints microseconds per call and the ratio)

The baseline is what a naive leader would do: ``croniter(expression, start).get_next(datetime)``
per computation (parse + compute, UTC, no DST rules). Kirby's figure includes the time zone
conversion and its DST rules; parsed expressions are cached.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from croniter import croniter

from kirby import cron

COUNT = 10_000
EXPRESSIONS = ["*/5 * * * *", "0 9-17 * * mon-fri", "30 2 * * *", "0 0 * * * */10"]
START = datetime(2024, 3, 1, tzinfo=timezone.utc)


def instants() -> list[datetime]:
    return [START + timedelta(minutes=37 * i) for i in range(COUNT)]  # ~8.5 months, crosses DST


def measure(function) -> float:
    """Best of two runs, in seconds, for COUNT calls."""
    best = float("inf")
    for _ in range(2):
        begin = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - begin)
    return best


def main() -> None:
    points = instants()
    print(f"{COUNT:,} next-fire computations per expression (best of 2)")
    print(f"{'expression':<22} {'croniter raw':>14} {'kirby UTC':>12} {'kirby Paris':>12} {'ratio (Paris/raw)':>18}")
    ratios = []
    for expression in EXPRESSIONS:
        raw = measure(lambda: [croniter(expression, t).get_next(datetime) for t in points])
        in_utc = measure(lambda: [cron.next_fire(expression, "UTC", t) for t in points])
        in_paris = measure(lambda: [cron.next_fire(expression, "Europe/Paris", t) for t in points])
        ratios.append(in_paris / raw)
        print(
            f"{expression:<22} {raw * 1e6 / COUNT:>11.1f} us {in_utc * 1e6 / COUNT:>9.1f} us "
            f"{in_paris * 1e6 / COUNT:>9.1f} us {in_paris / raw:>17.2f}x"
        )
    print(f"mean ratio kirby (Europe/Paris) / croniter raw: {sum(ratios) / len(ratios):.2f}x")


if __name__ == "__main__":
    main()
