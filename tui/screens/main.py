"""The main screen: a status line, one tab per view, the footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from tui.export import ViewTable
from tui.widgets.base import StateView
from tui.widgets.corruption_view import CorruptionView
from tui.widgets.heatmap_view import HeatmapView
from tui.widgets.layers_view import LayersView
from tui.widgets.overview import OverviewView
from tui.widgets.ranking_view import RankingView
from tui.widgets.regularization_view import RegularizationView
from tui.widgets.status_bar import StatusBar
from tui.widgets.tests_view import TestsView

# Tab id -> title, in order; the keys 1..7 follow this order.
TABS = {
    "overview": "Overview",
    "tests": "Test reviews",
    "ranking": "Ranking",
    "heatmap": "Heatmap",
    "layers": "Layers",
    "corruption": "Corruption",
    "regularization": "λ sweep",
}
VIEWS: dict[str, type[StateView]] = {
    "overview": OverviewView,
    "tests": TestsView,
    "ranking": RankingView,
    "heatmap": HeatmapView,
    "layers": LayersView,
    "corruption": CorruptionView,
    "regularization": RegularizationView,
}


class MainScreen(Screen[None]):
    """Every view of the store, one tab each."""

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with TabbedContent(initial="overview", id="tabs"):
            for tab, title in TABS.items():
                with TabPane(title, id=tab):
                    yield VIEWS[tab](id=f"{tab}-view")
        yield Footer()

    def view(self, tab: str) -> StateView:
        return self.query_one(f"#{tab}-view", StateView)

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    def show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.view(tab).focus_main()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self.call_after_refresh(self.view(event.pane.id).focus_main)

    def current_table(self) -> ViewTable | None:
        """The active view's table, for the export key."""
        return self.view(self.active_tab).table()
