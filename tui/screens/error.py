"""Errors as screens: a store that cannot be opened, and the full story behind a notification."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static


class StoreErrorScreen(Screen[None]):
    """The store given on the command line cannot be read: say why in one line, and nothing else."""

    BINDINGS = [Binding("q,escape", "app.quit", "quit")]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(id="store-error"):
            yield Static("Cannot open this store", classes="title")
            yield Static(self.message, id="store-error-message", markup=False)
            yield Static("Check the path, or recompute it with the same options and --export.", classes="hint")
        yield Footer()


class DetailsScreen(ModalScreen[None]):
    """The details of the last error (a traceback when the engine hit a bug), scrollable."""

    BINDINGS = [Binding("escape,d,q", "dismiss", "close")]

    def __init__(self, details: str) -> None:
        super().__init__()
        self.details = details

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="details"):
            yield Static("Error details", classes="title")
            yield Static(self.details, id="details-text", markup=False)
            yield Static("escape closes", classes="hint")
