"""The terminal UI: a Textual app over one store, with the engine running behind it in a thread.

Importing any module of this package never imports torch: the engine is imported inside
the worker that runs it (``tui.engine.default_runner``).
"""
