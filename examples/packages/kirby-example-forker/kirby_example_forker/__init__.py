"""Kirby example: forks children and a daemonized grandchild, then exits."""
