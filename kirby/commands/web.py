"""`kirby web`: not built yet."""

COMMANDS: list = []
