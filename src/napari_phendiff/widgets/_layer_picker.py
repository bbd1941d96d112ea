"""The Translate dock's layer picker: the viewer's image layers, ticked and ordered as the checkpoint's channels."""

from __future__ import annotations

from napari.layers import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem

from ._shared import connect_while_alive


class LayerPicker(QListWidget):
    """One checkable item per image layer of the viewer, in an order the user can change by dragging.

    Tick one layer (its channel axis holds the channels), or several single-channel layers (matched to the
    checkpoint's channels by name, widgets/_layers.py).
    """

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setMinimumHeight(60)
        self.setMaximumHeight(110)
        self.setToolTip(
            "Tick the image layer to translate, or the layers that form its channels: they are matched "
            "to the checkpoint's channels by name (DNA, field [DNA], field_DNA) or by their file's order."
        )
        self.refresh()
        connect_while_alive(viewer.layers.events.inserted, self.refresh, self)
        connect_while_alive(viewer.layers.events.removed, self.refresh, self)

    def refresh(self, event=None) -> None:
        """Follow the viewer's image layers, keeping the user's order and ticks; tick the active one if none is."""
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image)  # not a result's view of one
            and layer.metadata.get("phendiff", {}).get("kind") != "original view"
        ]
        for index in reversed(range(self.count())):
            if self.item(index).text() not in names:
                self.takeItem(index)
        listed = {self.item(index).text() for index in range(self.count())}
        for name in names:
            if name not in listed:
                item = QListWidgetItem(name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
                self.addItem(item)
        if not self.ticked() and self.count():
            active = self.viewer.layers.selection.active
            self.tick([active.name if isinstance(active, Image) else self.item(0).text()])

    def ticked(self) -> list[Image]:
        """The ticked layers, in the list's order."""
        names = [self.item(i).text() for i in range(self.count()) if self.item(i).checkState() == Qt.CheckState.Checked]
        return [self.viewer.layers[name] for name in names if name in self.viewer.layers]

    def tick(self, names: list[str]) -> None:
        """Tick exactly these layers, in this order (they move to the top of the list)."""
        for index in range(self.count()):
            self.item(index).setCheckState(Qt.CheckState.Unchecked)
        for position, name in enumerate(names):
            item = self.findItems(name, Qt.MatchFlag.MatchExactly)[0]
            self.insertItem(position, self.takeItem(self.row(item)))
            item.setCheckState(Qt.CheckState.Checked)
