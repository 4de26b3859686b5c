"""Command line: ``pyvidgen info | check | bench | demo``."""
