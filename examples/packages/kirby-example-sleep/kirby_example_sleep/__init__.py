"""Kirby example: sleeps KIRBY_SLEEP_SECONDS (default 300) with a heartbeat."""
