"""The Translate dock's settings: how a translation is run (strength, guidance, contrast, kept channels, steps, the
plane or stack, uncertainty samples), how the computer runs it (seed, tiles per batch, background tiles, device) and
a morph's frames and path. Choosing a direction preselects the checkpoint's calibrated setting; what the user then
changes counts as given. A part of TranslateDock (translate_dock.py), which owns the manifest and the buttons."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QSpinBox, QWidget

from ..core.checkpoint import resolve_checkpoint
from ..core.explore import MORPH_FRAMES
from ..core.calibration_bars import bars_by_hand
from ..core.options import HELP, MORPH_PATHS, NEGATIVES, TranslateOptions, direction_key, resolve_options
from ._shared import Note, button, device_combo, row, spin, tooltip
from ._translate_worker import TranslateRequest


class OptionsPanel:
    """The settings' controls, their preselection per direction, and the TranslateRequest they make."""

    def _make_option_controls(self) -> list[tuple[str | None, QWidget]]:
        """How a translation is run, as the Translate section's (label, control) rows."""
        defaults = TranslateOptions()
        self.strength = spin(QDoubleSpinBox(), 0.05, 1.0, defaults.strength, tooltip(HELP["strength"]))
        self.strength.setSingleStep(0.05)
        self.guidance = spin(
            QDoubleSpinBox(),
            1.0,
            20.0,
            defaults.guidance,
            tooltip(HELP["guidance"], "higher moves the phenotype further but may change what should stay"),
        )
        self.guidance.setSpecialValueText("off")
        self.negative = QComboBox()
        self.negative.addItems(list(NEGATIVES))
        self.negative.setToolTip(tooltip(HELP["negative"]))
        self.keep_box = QWidget()  # one check box per channel of the checkpoint, made when it is chosen
        QHBoxLayout(self.keep_box).setContentsMargins(0, 0, 0, 0)
        self.keep_box.setToolTip(tooltip(HELP["keep_channels"], "a kept DNA channel's nuclei cannot move"))
        self.keep_checks: dict[str, QCheckBox] = {}
        self.steps = spin(QSpinBox(), 1, 1000, defaults.steps, tooltip(HELP["steps"]))
        self.model_steps: int | None = None  # the steps the chosen checkpoint asks for, when it asks (its defaults)
        self.settings_info = Note()
        self.scope = QComboBox()
        self.scope.addItems(["current plane", "whole stack"])
        self.samples = spin(
            QSpinBox(),
            0,
            32,
            0,
            "Regenerate with this many seeds and add a layer of how much they "
            "disagree per pixel: where the model is unsure. Off: none.",
        )
        self.samples.setSpecialValueText("off")
        return [
            ("Strength", self.strength),
            ("Guidance", self.guidance),
            ("Contrast with", self.negative),
            ("Keep unchanged", self.keep_box),
            ("DDIM steps", self.steps),
            (None, self.settings_info),
            ("Translate", self.scope),
            ("Uncertainty samples", self.samples),
        ]

    def _make_run_controls(self) -> list[tuple[str | None, QWidget]]:
        """How the computer runs it, as the Run section's (label, control) rows."""
        self.seed = spin(QSpinBox(), 0, 2**31 - 1, 0, tooltip(HELP["seed"]))
        self.batch_size = spin(
            QSpinBox(),
            0,
            1024,
            0,
            tooltip(HELP["batch_size"], "auto: by the device's memory; lower it if the GPU runs out of memory"),
        )
        self.batch_size.setSpecialValueText("auto")
        self.skip_background = QCheckBox("copy tiles without cells")
        self.skip_background.setChecked(TranslateOptions().skip_background)
        self.skip_background.setToolTip(tooltip(HELP["skip_background"], "faster on sparse fields"))
        self.deep_cache = spin(
            QSpinBox(),
            0,
            10,
            0,
            tooltip(HELP["deep_cache"], "auto: 2 on pixel checkpoints (about 0.7 of the time, the same result)"),
        )
        self.deep_cache.setSpecialValueText("auto")
        self.device = device_combo()
        return [
            ("Seed", self.seed),
            ("Tiles per batch", self.batch_size),
            ("Skip background", self.skip_background),
            ("Deep cache", self.deep_cache),
            ("Device", self.device),
        ]

    def _make_explore_controls(self) -> list[tuple[str | None, QWidget]]:
        """A morph's frames and path, Morph and Control, as the Explore section's (label, control) rows."""
        self.frames = spin(
            QSpinBox(),
            1,
            64,
            MORPH_FRAMES,
            "Frames of the morph after the original: each goes a "
            "little deeper, the last is the translation; the slider scrubs the progression.",
        )
        self.morph_path = QComboBox()
        self.morph_path.addItems(list(MORPH_PATHS))
        self.morph_path.setToolTip(
            "strength: each frame takes the image apart a little deeper (frame 1 barely "
            "changed); embedding: every frame as deep as the translation, the condition "
            "blended from the source to the target."
        )
        self.morph_button = button(
            "Morph", self.morph, "One layer of frames from the original to the target, on the same cells."
        )
        self.control_button = button(
            "Control: source → source",
            self.control,
            "The same settings back to the source condition: what the model changes "
            "anyway, to tell the phenotype from reconstruction error.",
        )
        return [
            ("Morph frames", row(self.frames, self.morph_path)),
            (None, row(self.morph_button, self.control_button)),
        ]

    def _preselect_options(self, text=None) -> None:
        """Set strength, guidance and contrast to the checkpoint's calibrated setting for this direction (else the
        model's, else the project's defaults) and say which they are."""
        source, target = self.source.currentText(), self.target.currentText()
        if not self.manifest or not source or not target:
            return
        options, sources = resolve_options(self.manifest, source, target)
        self.strength.setValue(options.strength)
        self.guidance.setValue(options.guidance)
        self.negative.setCurrentText(options.negative)
        self._preselect_steps(options.steps if sources["steps"] != "default" else None, options.steps)
        for name, check in self.keep_checks.items():
            check.setChecked(name in options.keep_channels)
        origin = (
            "calibrated for this checkpoint"
            if "calibrated" in sources.values()
            else "this model's defaults, not calibrated"
            if "model default" in sources.values()
            else "project defaults"
        )
        if "calibrated" in sources.values():
            by_hand = bars_by_hand(self.manifest["calibration"].get(direction_key(source, target), {}))
            origin += f" by bars set by hand ({by_hand})" if by_hand else ""
        shown = ", ".join(f"{name} {getattr(options, name)}" for name in ("strength", "guidance", "negative"))
        if sources["steps"] != "default":
            shown += f", {options.steps} steps"
        if options.keep_channels:
            shown += f", {'+'.join(options.keep_channels)} kept"
        self.settings_info.setText(f"Preselected: {origin} ({shown}).")

    def _preselect_steps(self, own: int | None, default: int) -> None:
        """The checkpoint's own steps when it has some (a fine-tune of the shipped base: 50); a value the user typed
        stays, unless it is only the previous checkpoint's own."""
        if own is not None:
            self.steps.setValue(own)
        elif self.model_steps is not None and self.steps.value() == self.model_steps:
            self.steps.setValue(default)
        self.model_steps = own

    def _make_keep_checks(self, channels: list[str]) -> None:
        layout = self.keep_box.layout()
        for check in self.keep_checks.values():
            layout.removeWidget(check)
            check.deleteLater()
        self.keep_checks = {name: QCheckBox(name) for name in channels}
        for check in self.keep_checks.values():
            check.setEnabled(len(channels) > 1)
            layout.addWidget(check)

    def kept_channels(self) -> tuple[str, ...]:
        """The channels ticked under Keep unchanged, in the checkpoint's order."""
        return tuple(name for name, check in self.keep_checks.items() if check.isChecked())

    def _settings_request(self, source: str, target: str, images: np.ndarray, mode: str) -> TranslateRequest:
        """The dock's settings for one run; options the user changed from the preselection count as given."""
        shown = dict(
            strength=self.strength.value(),
            guidance=self.guidance.value(),
            negative=self.negative.currentText(),
            steps=self.steps.value(),
            seed=self.seed.value(),
            batch_size=self.batch_size.value() or None,
            keep_channels=self.kept_channels(),
            skip_background=self.skip_background.isChecked(),
            deep_cache=self.deep_cache.value() or None,
        )
        preset, _ = resolve_options(self.manifest, source, target)
        changed = {name: value for name, value in shown.items() if getattr(preset, name) != value}  # the user's
        options, sources = resolve_options(self.manifest, source, target, changed)
        return TranslateRequest(
            checkpoint=resolve_checkpoint(self.checkpoint.currentData()),
            device=self.device.currentData(),
            source=source,
            target=target,
            options=options,
            sources=sources,
            images=images,
            mode=mode,
            frames=self.frames.value(),
            morph_path=self.morph_path.currentText(),
            samples=self.samples.value(),
        )
