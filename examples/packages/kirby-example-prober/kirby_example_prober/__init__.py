"""Kirby example: probes what a script can read and write (isolation tests)."""
