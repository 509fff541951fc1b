"""Kirby example: runs until SIGTERM with a heartbeat every second."""
