"""The main screen: a status line, one tab per view, the footer."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, TabbedContent, TabPane

from tui import format as fmt
from tui.widgets.base import StateView
from tui.widgets.overview import OverviewView
from tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from tui.export import ViewTable

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
# The other tabs' views: module and class, imported and mounted after the first frame, so that
# the first screen waits for neither their imports nor their widgets.
DEFERRED_VIEWS = {
    "tests": ("tui.widgets.tests_view", "TestsView"),
    "ranking": ("tui.widgets.ranking_view", "RankingView"),
    "heatmap": ("tui.widgets.heatmap_view", "HeatmapView"),
    "layers": ("tui.widgets.layers_view", "LayersView"),
    "corruption": ("tui.widgets.corruption_view", "CorruptionView"),
    "regularization": ("tui.widgets.regularization_view", "RegularizationView"),
}


def view_id(tab: str) -> str:
    return f"{tab}-view"


class DeferredView(Widget):
    """Holds a tab's place until the first frame is drawn, then imports its view and mounts it instead."""

    def __init__(self, tab: str) -> None:
        super().__init__()
        self.tab = tab

    def on_mount(self) -> None:
        self.call_after_refresh(self._replace)

    async def _replace(self) -> None:
        module, name = DEFERRED_VIEWS[self.tab]
        view: StateView = getattr(importlib.import_module(module), name)(id=view_id(self.tab))
        await self.parent.mount(view, after=self)
        await self.remove()


class MainScreen(Screen[None]):
    """Every view of the store, one tab each."""

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with TabbedContent(initial=FIRST_TAB, id="tabs"):
            for tab, title in TABS.items():
                with TabPane(title, id=tab):
                    yield OverviewView(id=view_id(tab)) if tab == FIRST_TAB else DeferredView(tab)
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "content_version", self._name_tabs)

    def _name_tabs(self) -> None:
        """The test examples' tab is a causal LM's queries (set once the store says so, not at every poll)."""
        data = getattr(self.app, "data", None)
        if data is None:
            return
        tab, title = self.query_one(TabbedContent).get_tab("tests"), fmt.capitalized(data.words.tests)
        if str(tab.label) != title:
            tab.label = title

    def view(self, tab: str) -> StateView | None:
        """The view of ``tab``; None for the instant before a lazy view is mounted."""
        views = self.query(f"#{view_id(tab)}").results(StateView)
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

    def current_table(self) -> "ViewTable | None":
        """The active view's table, for the export key."""
        view = self.view(self.active_tab)
        return None if view is None else view.table()
