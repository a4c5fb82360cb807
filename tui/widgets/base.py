"""What every tab's view shares: it follows the app state, and a hidden view redraws only when shown."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.widget import Widget

from tui.data import StoreData
from tui.export import ViewTable

if TYPE_CHECKING:
    from tui.app import InfluenceApp

NO_STORE_YET = "No store is open yet: the engine creates it once the model and data are loaded."

# The app's reactive attributes (tui.app.InfluenceApp) a view may follow.
SELECTION = ("test_index", "variant", "reg_index", "content_version")


class StateView(Widget):
    """A tab's content; ``update_view`` draws it from the app state and the store."""

    WATCHES: ClassVar[tuple[str, ...]] = SELECTION

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._stale = True

    @property
    def explorer(self) -> "InfluenceApp":
        return cast("InfluenceApp", self.app)

    @property
    def data(self) -> StoreData | None:
        return self.explorer.data

    @property
    def no_store(self) -> str:
        """What a view says instead of data: why there is no store, when that is known."""
        problem = self.explorer.store_problem
        return f"No store to show: {problem}" if problem else NO_STORE_YET

    def on_mount(self) -> None:
        # The first draw waits for the Show event: a view in a hidden tab costs nothing at start-up.
        for name in self.WATCHES:
            self.watch(self.app, name, self._state_changed, init=False)

    def _state_changed(self) -> None:
        if self.is_shown:
            self._stale = False
            self.update_view()
        else:
            self._stale = True

    @property
    def is_shown(self) -> bool:
        """Displayed in its screen (the screen itself may be covered, e.g. by the pair view)."""
        node: Widget | None = self
        while isinstance(node, Widget):
            if not node.display:
                return False
            node = node.parent if isinstance(node.parent, Widget) else None
        return True

    def on_show(self) -> None:
        if self._stale:
            self._stale = False
            self.update_view()

    def update_view(self) -> None:
        """Redraw from the current state; subclasses implement it."""
        raise NotImplementedError

    def table(self) -> ViewTable | None:
        """What the export key writes for this view (None: the view has no table)."""
        return None

    def focus_main(self) -> None:
        """Give the keyboard to the view's main widget when its tab opens."""
        self.focus()
