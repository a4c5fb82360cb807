"""The main screen: a status line, one tab per view, the footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.lazy import Lazy
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
FIRST_TAB = "overview"
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
        with TabbedContent(initial=FIRST_TAB, id="tabs"):
            for tab, title in TABS.items():
                with TabPane(title, id=tab):
                    view = VIEWS[tab](id=f"{tab}-view")
                    # The hidden tabs mount after the first frame: the first screen is drawn sooner.
                    yield view if tab == FIRST_TAB else Lazy(view)
        yield Footer()

    def view(self, tab: str) -> StateView | None:
        """The view of ``tab``; None for the instant before a lazy view is mounted."""
        views = self.query(f"#{tab}-view").results(StateView)
        return next(views, None)

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    def show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._focus_view(tab)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self.call_after_refresh(self._focus_view, event.pane.id)

    def _focus_view(self, tab: str) -> None:
        view = self.view(tab)
        if view is not None:
            view.focus_main()

    def current_table(self) -> ViewTable | None:
        """The active view's table, for the export key."""
        view = self.view(self.active_tab)
        return None if view is None else view.table()
