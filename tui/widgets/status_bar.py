"""The top line: which store, which test review, which labels and λ, how far the engine is."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui import format as fmt
from tui.widgets.base import StateView

SEPARATOR = " │ "


class StatusBar(StateView):
    """One line that always says what every view is showing."""

    WATCHES = ("test_index", "variant", "reg_index", "score_kind", "content_version", "stages_version", "engine_state")
    DEFAULT_CSS = "StatusBar { height: 1; }"

    def compose(self):
        yield Static(id="status-text")

    def update_view(self) -> None:
        self.query_one("#status-text", Static).update(self.describe(), layout=False)

    def describe(self) -> Text:
        app, data = self.explorer, self.data
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(data.path.name if data else app.store_path.name, style="bold")
        if data is not None:
            words = data.words
            label = fmt.one_line(data.label_name(int(data.test.label[app.test_index]), "test"))
            parts = [
                f"{words.heading.lower()} #{app.test_index} ({label})",
                f"{app.variant} {words.labels}",
                f"λ {fmt.lam(data.regularizations[app.reg_index])} ({app.reg_index + 1}/{len(data.regularizations)})",
                fmt.SCORE_SHORT[app.score_kind],
            ]
            if not data.scored.all():
                parts.append(f"scored {fmt.count(int(data.scored.sum()))}/{fmt.count(data.n_train)}")
            for part in parts:
                text.append(SEPARATOR + part)
        if app.engine_running:
            text.append(SEPARATOR)
            text.append(f"engine {app.engine_state}", style="bold yellow")
        return text
