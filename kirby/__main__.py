"""``python -m kirby`` runs the ``kirby`` command."""

from kirby.cli import main

main()
