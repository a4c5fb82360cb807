"""What a run is, in pure Python: its configuration and options, the names of its stages,
its progress events, its errors and the command line that builds it.

Every other package imports from here (``store``, ``influence``, ``tui``), and this
package imports none of them at module level, nor torch, transformers or textual: the
UI and the store stay torch-free because what they need lives here, not by deferring
imports by hand. ``tests/test_import_contract.py`` walks the import graph to hold it so.
"""
