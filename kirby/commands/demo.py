"""`kirby demo`: not built yet."""

COMMANDS: list = []
