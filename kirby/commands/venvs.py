"""`kirby venvs`: not built yet."""

COMMANDS: list = []
