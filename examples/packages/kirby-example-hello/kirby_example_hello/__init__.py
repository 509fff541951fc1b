"""Kirby example: prints a few lines and exits 0."""
