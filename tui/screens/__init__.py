"""Screens pushed over the main one: the pair view, help, errors."""
