"""Kirby's web package."""
