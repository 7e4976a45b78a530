"""Bundled sample data (see README.txt for sources and licences)."""
