"""``python -m zoo``: the same command line as ``zoo``."""

from zoo.cli import main

main()
