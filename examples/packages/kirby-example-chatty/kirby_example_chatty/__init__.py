"""Kirby example: prints KIRBY_CHATTY_LINES lines (or one huge line)."""
