"""The built-in demo: a generated review corpus and a small classifier trained on it."""
