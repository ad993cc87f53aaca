"""``python -m geounet`` runs the command-line interface."""

from geounet.cli.main import cli

cli()
