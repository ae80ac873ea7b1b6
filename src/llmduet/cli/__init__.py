"""The ``duet`` command."""
