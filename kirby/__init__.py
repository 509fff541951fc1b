"""Kirby: run users' Python scripts on a cluster, scheduled or as daemons, never twice, never missed."""

__version__ = "0.1.0"
