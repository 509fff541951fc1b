"""Kirby example: works STINT_SECONDS (or until STINT_UNTIL exists), recording its start and end."""
