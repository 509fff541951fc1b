"""`kirby supervisor`: not built yet."""

COMMANDS: list = []
