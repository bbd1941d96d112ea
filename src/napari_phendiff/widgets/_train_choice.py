"""The Train dock's first choices, in the order they are decided: fine-tune a pre-trained model (the shipped
microscopy base, a PhenDiff checkpoint, or a Stable Diffusion folder or hub id) or train one from scratch (the pixel
model at a preset, or the CycleGAN baseline); the adapter of a fine-tune and what each adapter was measured to cost.
A part of TrainDock (train_dock.py), which owns the form (`_labels`) and the settings the choices set (steps,
learning rate, image size). Reading what a run starts from is _train_start.py's."""

from __future__ import annotations

import re

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QSpinBox, QWidget

from ..core.models import KINDS
from ..core.models.bases import DEFAULT_BASE, adapter_costs
from ..core.options import ADAPTERS, PRESET_SIZES, TRAIN_DEFAULTS, TRAIN_HELP, default_lr, default_steps
from ..core.pace import duration
from ._shared import button, row, spin, tooltip

ADAPTER_TIPS = {
    "lora": "low-rank updates of the attention layers: few weights, little memory (tens to hundreds of images)",
    "svdiff": "shifts of the singular values of every weight: fewest weights (tens of images)",
    "attention": "the attention layers themselves (hundreds of images)",
    "full": "every UNet weight: most memory (thousands of images)",
}
# The first choice, and what fine-tuning starts from.
WHAT = {"fine-tune": "Fine-tune a pre-trained model", "scratch": "Train from scratch"}
SOURCES = {
    "shipped": f"the shipped {DEFAULT_BASE} base (offline)",
    "checkpoint": "a PhenDiff checkpoint",
    "stable-diffusion": "a Stable Diffusion folder or hub id",
}
FINE_TUNING = next(name for name, kind in KINDS.items() if kind.fine_tunes)  # the kind a base model becomes
STARTING = next(name for name, kind in KINDS.items() if kind.starts_from)  # the kind a checkpoint can start


class ModelChoice:
    """What to train: the choices, the controls each shows, and the settings each takes."""

    def _make_choice_controls(self) -> list[tuple[str, QWidget]]:
        """The choices' controls, as the form's (label, control) rows."""
        self.what = combo(
            WHAT,
            "fine-tune",
            "Fine-tune: start from a model that has already learnt images (fewer "
            "images and steps). From scratch: random weights, many images and steps.",
        )
        self.source = combo(SOURCES, "shipped", "The pre-trained model to start from.")
        self.start_from = QLineEdit(placeholderText="checkpoint folder, or demo (the shipped example)")
        self.start_from.setToolTip(tooltip(TRAIN_HELP["start_from"], "it fixes the preset"))
        self.start_from.editingFinished.connect(self.check_start_from)
        self.start_from_row = row(self.start_from, button("Browse…", self.browse_start_from))
        self.base = QLineEdit(placeholderText="Stable Diffusion 1.x/2.x folder (diffusers layout) or hub id")
        self.base.setToolTip(tooltip(TRAIN_HELP["base"], "docs/latent.md says how to download one"))
        self.base.editingFinished.connect(self._base_edited)
        self.base_row = row(self.base, button("Browse…", self.browse_base))
        self.source_info = QLabel(wordWrap=True)
        self.model = combo(
            {name: f"{name}: {without_flags(kind.help)}" for name, kind in KINDS.items() if not kind.fine_tunes},
            TRAIN_DEFAULTS["model"],
            "What to train from random weights.",
        )
        self.preset = combo(
            {name: name for name in PRESET_SIZES}, TRAIN_DEFAULTS["preset"], tooltip(TRAIN_HELP["preset"])
        )
        self.adapter = combo({name: name for name in ADAPTERS}, TRAIN_DEFAULTS["adapter"], "")
        for i, name in enumerate(ADAPTERS):
            self.adapter.setItemData(i, ADAPTER_TIPS[name], Qt.ItemDataRole.ToolTipRole)
        self.rank = spin(
            QSpinBox(), 1, 256, TRAIN_DEFAULTS["rank"], tooltip(TRAIN_HELP["rank"], "more is more capacity and memory")
        )
        self.gradient_checkpointing = QCheckBox("less memory, slower steps")
        self.gradient_checkpointing.setChecked(TRAIN_DEFAULTS["gradient_checkpointing"])
        self.costs = QLabel(wordWrap=True)
        return [
            ("What to train", self.what),
            ("Start from", self.source),
            ("Checkpoint", self.start_from_row),
            ("Base model", self.base_row),
            ("", self.source_info),
            ("Model", self.model),
            ("Preset", self.preset),
            ("Adapter", self.adapter),
            ("LoRA rank", self.rank),
            ("Gradient checkpointing", self.gradient_checkpointing),
            ("", self.costs),
        ]

    def _connect_choices(self) -> None:
        """Once every control exists: a choice changes the controls shown and the settings it takes."""
        for choice in (self.what, self.source, self.model):
            choice.currentIndexChanged.connect(self._choice_changed)
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.adapter.currentIndexChanged.connect(self._adapter_changed)

    def kind(self) -> str:
        """The model kind the first choices describe."""
        if self.what.currentData() == "scratch":
            return self.model.currentData()
        return STARTING if self.source.currentData() == "checkpoint" else FINE_TUNING

    def _choice_changed(self, index=None) -> None:
        """Show the controls of the choice; take its image size and usual learning rate."""
        self._show_choice()
        if self._restoring:
            return
        self.steps.setValue(default_steps(self.kind(), self._base_source() or None))
        self._adapter_changed()
        if self.what.currentData() == "scratch":
            self._preset_changed()
        elif self.source.currentData() == "shipped":
            self._read_shipped_base()
        elif self.source.currentData() == "checkpoint":
            self.check_start_from()
        else:
            self.check_base()

    def _show_choice(self) -> None:
        fine_tune, source = self.what.currentData() == "fine-tune", self.source.currentData()
        kind = KINDS[self.kind()]
        self._show(self.source, fine_tune)
        self._show(self.start_from_row, fine_tune and source == "checkpoint")
        self._show(self.base_row, fine_tune and source == "stable-diffusion")
        self._show(self.source_info, fine_tune)
        self._show(self.model, not fine_tune)
        self._show(self.preset, not kind.fine_tunes)
        self.preset.setEnabled(not fine_tune)  # a checkpoint to start from fixes it
        for widget in (self.adapter, self.rank, self.gradient_checkpointing, self.costs):
            self._show(widget, kind.fine_tunes)
        self.previews.setEnabled(kind.generates)

    def _show(self, widget: QWidget, visible: bool) -> None:
        """Show or hide a form row: the control and its label."""
        widget.setVisible(visible)
        self._labels[widget].setVisible(visible)

    def _preset_changed(self, index=None) -> None:
        if self.what.currentData() == "scratch" and not self._restoring:
            self.image_size.setValue(PRESET_SIZES[self.preset.currentData()])

    def _adapter_changed(self, index=None) -> None:
        kind = self.kind()
        if not self._restoring:
            self.lr.setValue(default_lr(kind, self.adapter.currentData(), self._base_source() or None))
        self.rank.setEnabled(self.adapter.currentData() == "lora")
        self.adapter.setToolTip(ADAPTER_TIPS[self.adapter.currentData()])
        self._show_costs()

    def _show_costs(self, *_) -> None:
        if KINDS[self.kind()].fine_tunes:
            base = self._base_source()
            self.costs.setText(
                cost_text(
                    adapter_costs(base) if base else None,
                    self.adapter.currentData(),
                    self.steps.value(),
                    self.batch_size.value(),
                    self.image_size.value(),
                    self.minutes.value(),
                )
            )

    def _base_source(self) -> str:
        """The base a fine-tuned run starts from ('' when the folder or hub id is still to be given)."""
        return DEFAULT_BASE if self.source.currentData() == "shipped" else self.base.text().strip()

    def _chosen(self) -> tuple[str, str]:
        return self.what.currentData(), self.source.currentData()

    def _choose(self, what: str, source: str | None = None) -> None:
        self.what.setCurrentIndex(self.what.findData(what))
        if source is not None:
            self.source.setCurrentIndex(self.source.findData(source))

    def missing_start(self) -> str:
        """What a fine-tune still needs to know where it starts ('' when nothing is missing)."""
        if KINDS[self.kind()].fine_tunes and not self._base_source():
            return (
                f"Give the Stable Diffusion folder or hub id (Base model), or choose the shipped {DEFAULT_BASE} "
                "base under Start from."
            )
        if (
            not KINDS[self.kind()].fine_tunes
            and self.what.currentData() == "fine-tune"
            and not self.start_from.text().strip()
        ):
            return "Give the PhenDiff checkpoint to start from (a folder, or demo), or choose another Start from."
        return ""


def cost_text(
    costs: dict | None, adapter: str, steps: int, batch_size: int, image_size: int, minutes: float = 0.0
) -> str:
    """What each adapter was measured to cost (models.bases.adapter_costs), and the time of this run with `adapter`:
    its seconds per step scaled by the batch size and the image area, an estimate (the computer, the data loading and
    the checkpoints differ)."""
    if not costs:
        return "What each adapter costs: not measured for this base (docs/benchmarks.md)."
    size, batch = costs["image_size"], costs["batch_size"]
    lines = [f"Measured on {costs['measured_on']}, at {size} px, batch {batch}:"]
    lines += [
        f"{name}: {_number(c['seconds_per_step'])} s/step, {_number(c['peak_memory_mb'])} MB peak memory, "
        f"checkpoint {_number(c['checkpoint_mb'])} MB"
        for name, c in costs["adapters"].items()
    ]
    measured = costs["adapters"].get(adapter)
    if minutes:
        lines.append(
            f"This run: about {duration(minutes * 60)} of training (the time budget); its steps are "
            "timed on this computer when it starts."
        )
    elif measured is None:
        lines.append(f"{adapter}: not measured, so no estimate of this run's time.")
    else:
        seconds = steps * measured["seconds_per_step"] * batch_size / batch * (image_size / size) ** 2
        lines.append(
            f"This run ({adapter}, {steps} steps, batch {batch_size}, {image_size} px): about "
            f"{duration(seconds)}, an estimate from these measurements."
        )
    return "\n".join(lines)


def _number(x: float) -> str:
    return f"{x:.2g}" if abs(x) < 10 else f"{x:.0f}"


def without_flags(text: str) -> str:
    """A kind's help without the command-line flags it names in brackets ("(--base)")."""
    return re.sub(r"\s*\([^)]*--[^)]*\)", "", text)


def combo(choices: dict[str, str], default: str, tip: str) -> QComboBox:
    """A combo box of {data: text}, `default` chosen."""
    made = QComboBox()
    for data, text in choices.items():
        made.addItem(text, data)
    made.setCurrentIndex(made.findData(default))
    made.setToolTip(tip)
    return made
