"""Shared fixtures. Sub-folders (management/, gateway/, e2e/) add their own conftest.py."""
