"""Kirby's supervisor package."""
