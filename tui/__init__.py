"""The terminal UI: a Textual app over one store, with the engine running behind it in a process of its own.

No module of this package imports torch, ever: the engine runs in a child process
(``tui.engine.process_runner``) that a worker thread follows.
"""
