"""Command-line interface: ``kraken demo | bench``. The only layer that reads argv."""
