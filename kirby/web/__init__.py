"""Kirby's web package: ``create_app`` (Flask app factory) and ``serve`` (waitress)."""

from kirby.web.app import create_app

__all__ = ["create_app"]
