"""``?``: every key binding, read from the classes that declare them, so the list cannot go stale."""

from __future__ import annotations

from typing import Iterable, Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# (section title, the bindings it lists); the app supplies them: see InfluenceApp.help_sections.
HelpSection = tuple[str, Sequence[BindingType]]


class HelpScreen(ModalScreen[None]):
    """A scrollable list of key bindings by where they apply."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def __init__(self, sections: Sequence[HelpSection]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static("Keys", classes="title")
            for title, bindings in self.sections:
                yield Static(Text(title, style="bold"))
                yield Static(self._table(bindings), classes="help-section")
            yield Static(
                "Every action is also in the command palette (ctrl+p). The mouse works: click a tab, "
                "a row, a column header (sorts) or a heatmap cell.",
                classes="hint",
            )

    def _keys(self, binding: Binding) -> str:
        keys = [key.strip() for key in binding.key.split(",")]
        if binding.key_display:
            return binding.key_display
        return " ".join(self.app.get_key_display(Binding(key, binding.action)) for key in keys)

    def _table(self, bindings: Iterable[BindingType]) -> Table:
        table = Table(show_header=False, box=None, padding=(0, 2, 0, 2), expand=False)
        table.add_column("key", style="bold", min_width=12)
        table.add_column("action")
        table.add_column("what it does", style="dim")
        for binding in bindings:
            if isinstance(binding, Binding) and binding.description:
                table.add_row(self._keys(binding), binding.description, binding.tooltip)
        return table
