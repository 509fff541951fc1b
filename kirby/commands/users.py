"""`kirby users`: not built yet."""

COMMANDS: list = []
