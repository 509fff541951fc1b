"""Kirby example: prints to stderr and exits 1."""
