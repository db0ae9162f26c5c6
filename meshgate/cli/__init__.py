"""The ``meshgate`` command line."""
