"""Reference models of the papers, built from :mod:`pyvidgen.nn`."""
