"""One module per ``kirby`` command (or group of commands); each exposes ``COMMANDS``."""
