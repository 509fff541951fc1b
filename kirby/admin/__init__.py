"""Kirby's admin package."""
