"""The Translate dock's result layers: a run's translation, difference, morph and spread laid out by channel
(_comparison.py), saved as TIFFs, shown side by side. A part of TranslateDock (translate_dock.py), which owns the
viewer and the run in progress (`_pending`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import QFileDialog

from ..core.errors import PhenDiffError
from ..core.export import layer_file_name, provenance
from ..core.option_words import describe, settings_tag
from ..core.translate import is_direct
from ._comparison import COLUMNS, LABELS, ChannelRow, channel_rows, label_points, merge_plane, place
from ._layers import ImageInput
from ._result_layers import difference_layer, result_name, translated_layer
from ._translate_worker import Translated, TranslateRequest


class ResultLayers:
    """A run's results as layers in the viewer, and Save results."""

    def _show_result(self, outcome: Translated) -> None:
        """Add `<name>_to_<target>_<settings>` and `..._diff` per input layer (a morph: one layer of frames), in
        place of an earlier run's of the same names, then show them side by side."""
        inputs, request = self._pending.inputs, self._pending.request
        target, label = request.shown_target, " (control)" if request.mode == "control" else ""
        meta = provenance(
            self.model,
            request.source,
            target,
            request.options,
            input_path=", ".join(layer.name for layer in inputs.layers),
        )
        meta["plane"] = inputs.plane
        settings = describe(request.options, request.sources, direct=is_direct(self.model))
        tag = settings_tag(request.options, direct=is_direct(self.model))
        reused = " The inversion was reused: only regenerated." if outcome.reused else ""
        if outcome.copied[0]:
            reused += f" {outcome.copied[0]} of {outcome.copied[1]} tiles held no cell: copied, not translated."
        if request.mode == "morph":
            self._show_morph(inputs, request, outcome.images, meta, tag)
            self.status.setText(
                f"Done: morph {request.source} → {target} in {request.frames} frame(s) after the "
                f"original ({settings}). Move the frame slider.{reused}"
            )
            return
        self.results, groups, shown, limits = [], {}, [], []
        self.rows = channel_rows(inputs, self.manifest["channel_names"], request.options.keep_channels)
        extra = "control" if request.mode == "control" else ""
        extras = (extra, "_".join(filter(None, [extra, "diff"])))  # the translated's and the difference's
        translated, original = inputs.layer_shaped(outcome.images), inputs.layer_shaped(request.images)
        for r, row in enumerate(self.rows):
            new = row.take(translated[row.layer.name])
            results = [new, new.astype(np.float32) - row.take(original[row.layer.name]).astype(np.float32)]
            names = [result_name(row.stem, target, tag, e) for e in extras]
            view, new, diff = self._add_row(r, row, results, names, {**meta, "channels": row.channel.split("+")})
            new.help = diff.help = f"{request.source} → {target}{label}: {settings}" + (
                f"; {row.channel} was kept (its original pixels)" if row.kept else ""
            )
            shown += [view, new, diff]
            for layer, e in zip((new, diff), extras):
                self._record(layer, row, result_name(row.layer.name, target, tag, e), groups)
            if not row.kept:
                limits.append(f"{row.channel} ±{diff.contrast_limits[1]:.4g}")
        self._record_groups(groups)
        if request.mode == "translate":
            self._last = (inputs, request, outcome.images)
        self.show_side_by_side(shown)
        kept = [row.channel for row in self.rows if row.kept]
        order = f"; kept (last, as the original): {', '.join(kept)}" if kept else ""
        matched = f" {inputs.matched[0].upper()}{inputs.matched[1:]}." if inputs.matched else ""
        self.status.setText(
            f"Done: {request.source} → {target}{label} ({settings}). One row per channel: original | translated | "
            f"difference (limits {', '.join(limits) or 'none'}){order}. Your own layers are hidden.{reused} "
            f"'Save results…' writes the translated and difference layers as TIFFs.{matched}"
        )

    def _add_row(self, r: int, row: ChannelRow, results: list[np.ndarray], names: list[str], meta: dict) -> list[Image]:
        """Row `r` of the comparison: a view of the original channel, its translation and the difference, each
        placed in its column, in the channel's colours (the writer names a TIFF's channels from meta's)."""
        layers = [self._add_view(r, row)]
        inputs = self._pending.inputs
        for column, (name, data, make) in enumerate(zip(names, results, (translated_layer, difference_layer)), 1):
            kwargs = row.stretch(make(row.layer, data, row.held(), name, meta), row.held())
            if make is translated_layer:
                kwargs.update(self._look(row))
            if inputs.plane is not None and name in self.viewer.layers:  # keep the planes translated before
                kwargs["data"] = merge_plane(inputs, row.held(), data, np.asarray(self.viewer.layers[name].data))
            layers.append(self._add_or_replace(place(kwargs, row, r, column)))
        if hasattr(layers[2], "colorbar"):  # napari >= 0.6: the difference's colours read as values
            layers[2].colorbar.visible = not row.kept
        return layers

    def _look(self, row: ChannelRow) -> dict:
        """The channel's colours and contrast limits, the same for its original, translation and morph."""
        return dict(
            colormap=row.colormap(len(self.rows)),
            contrast_limits=row.contrast_limits(row.take(np.asarray(row.layer.data))),
        )

    def _add_view(self, r: int, row: ChannelRow) -> Image:
        """`<stem> original`: a view of the user's channel (no copy), in the first column of row `r`."""
        view = row.stretch(
            translated_layer(
                row.layer,
                row.take(row.layer.data),
                row.held(),
                f"{row.stem} original" + (" (kept)" if row.kept else ""),
                {},
            ),
            row.held(),
        )
        view.update(self._look(row), metadata={"phendiff": {"kind": "original view", "original": row.layer.name}})
        return self._add_or_replace(place(view, row, r, 0))

    def _record(self, layer: Image, row: ChannelRow, file_stem: str, groups: dict) -> None:
        """Note a result layer for Save results: alone, or as one channel of its multichannel layer's file."""
        if row.axis is None:
            self.results.append((layer.name, [(layer.name, None)]))
        else:
            groups.setdefault(file_stem, []).append((row.index, layer.name, row.channel))

    def _record_groups(self, groups: dict) -> None:
        self.results += [
            (stem, [(name, channel) for _, name, channel in sorted(members)]) for stem, members in groups.items()
        ]

    def _show_morph(
        self, inputs: ImageInput, request: TranslateRequest, frames: np.ndarray, meta: dict, tag: str
    ) -> None:
        """One row per channel, as a translation's: the original, then a layer with a leading "frame" axis in the
        translated's place (frame 0 the original, the last the translation); kept channels last."""
        self.results, groups, shown = [], {}, []
        self.rows = channel_rows(inputs, self.manifest["channel_names"], request.options.keep_channels)
        axes = inputs.kept_axes  # the layer's axes that a (plane's) result keeps
        stack_axes = inputs.order[: inputs.n_stack]
        at = dict(zip(stack_axes, inputs.plane)) if inputs.plane is not None else None  # where a plane's morph sits
        per_layer = [np.stack(parts) for parts in zip(*(inputs.split(frame) for frame in frames))]
        stacks = {layer.name: stack for layer, stack in zip(inputs.layers, per_layer)}
        extra = "morph" if request.morph_path == "strength" else f"morph_{request.morph_path}"
        for r, row in enumerate(self.rows):
            stack = np.stack([row.take(frame, axes, every=True) for frame in stacks[row.layer.name]])
            held = row.held(axes, every=True)
            kwargs = translated_layer(
                row.layer,
                stack[0],
                held,
                result_name(row.stem, request.target, tag, extra),
                {
                    **meta,
                    "morph_frames": request.frames,
                    "morph_path": request.morph_path,
                    "channels": row.channel.split("+"),
                },
            )
            kwargs = row.stretch(kwargs, held, at)
            kwargs.update(
                self._look(row),
                data=stack,
                scale=[1.0, *kwargs["scale"]],
                translate=[0.0, *kwargs["translate"]],
                axis_labels=["frame", *kwargs["axis_labels"]],
            )
            morph = self._add_or_replace(place(kwargs, row, r, 1))
            shown += [self._add_view(r, row), morph]
            self._record(morph, row, result_name(row.layer.name, request.target, tag, extra), groups)
        self._record_groups(groups)
        self.show_side_by_side(shown)
        self.viewer.dims.set_current_step(0, len(frames) - 1)

    def _add_or_replace(self, kwargs: dict) -> Image:
        """Add a result layer; one of the same name (a run with the same settings on the same layer) is replaced
        at its place in the layer list, so re-runs never pile up napari's `name [1]` copies."""
        name = kwargs["name"]
        index = self.viewer.layers.index(name) if name in self.viewer.layers else None
        if index is not None:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_image(**kwargs)
        if index is not None:
            self.viewer.layers.move(self.viewer.layers.index(layer.name), index)
        return layer

    def _show_spread(self, spread: np.ndarray) -> None:
        """`<name>_std`: the per-pixel standard deviation over seeds, over the translation of each channel's row."""
        inputs, request = self._pending.inputs, self._pending.request
        tag = settings_tag(request.options, direct=is_direct(self.model))
        full = inputs.layer_shaped(spread.astype(np.float32))
        groups = {}
        for r, row in enumerate(self.rows):
            part = row.take(full[row.layer.name])
            kwargs = row.stretch(
                translated_layer(
                    row.layer,
                    part,
                    row.held(),
                    result_name(row.stem, request.target, tag, "std"),
                    {"samples": request.samples, "kind": "uncertainty", "channels": row.channel.split("+")},
                ),
                row.held(),
            )
            kwargs.update(
                colormap="inferno",
                contrast_limits=(0.0, float(np.percentile(part, 99.9)) or 1.0),
                rgb=False,
                opacity=0.6,
                blending="translucent",
            )
            layer = self._add_or_replace(place(kwargs, row, r, 1))
            self._record(layer, row, result_name(row.layer.name, request.target, tag, "std"), groups)
        self._record_groups(groups)
        self.status.setText(
            self.status.text() + f" Uncertainty: spread over {request.samples} seeds, over each "
            "translation (toggle it in the layer list)."
        )

    # --- cells ---------------------------------------------------------------------------------------------------
    def save_results(self, folder: str | Path) -> list[Path]:
        """Write the last run's layers (translated and difference, a morph, an uncertainty) into `folder` with the
        plugin's TIFF writer: `<layer name>.tif` under the name rule (layer_file_name), channel names and settings
        kept; an existing file is not overwritten (the new one gets `_2`, `_3`, ...)."""
        from ..writer import write_image_layer, write_image_layers

        present = [
            (stem, members) for stem, members in self.results if all(name in self.viewer.layers for name, _ in members)
        ]
        if not present:
            raise PhenDiffError(
                "Translate first: Save results writes the layers of the last run, and none of them is open."
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for stem, members in present:
            stem = layer_file_name(stem)
            path, n = folder / f"{stem}.tif", 1
            while path.exists():
                n += 1
                path = folder / f"{stem}_{n}.tif"
            layers = [self.viewer.layers[name].as_layer_data_tuple() for name, _ in members]
            if members[0][1] is None:
                written += [Path(p) for p in write_image_layer(str(path), *layers[0][:2])]
            else:  # the channels of one multichannel layer: one TIFF, its channels named
                layers = [
                    (data, {**meta, "name": channel}, kind) for (data, meta, kind), (_, channel) in zip(layers, members)
                ]
                written += [Path(p) for p in write_image_layers(str(path), layers)]
        return written

    def browse_save(self) -> None:
        start = next(
            (
                str(Path(p).parent)
                for p in (getattr(getattr(layer, "source", None), "path", None) for layer in self.channel_layers())
                if p
            ),
            "",
        )
        folder = QFileDialog.getExistingDirectory(self, "Choose the folder for the results' TIFFs", start)
        if folder:
            try:
                written = self.save_results(folder)
                self.status.setText(f"Saved {len(written)} file(s) in {folder}: {', '.join(p.name for p in written)}.")
            except (PhenDiffError, OSError) as exc:
                self._report(str(exc))

    def show_side_by_side(self, shown: list[Image]) -> None:
        """Show only the comparison's layers (placed in their rows and columns, in the rows' order), each named above
        its corner (channel and column), on top, and fit them in view."""
        per_row = len(shown) // len(self.rows)
        cells = [
            (f"{row.channel}{' (kept)' if row.kept else ''}: {column}", layer)
            for r, row in enumerate(self.rows)
            for column, layer in zip(
                ("original", "morph") if per_row == 2 else COLUMNS, shown[r * per_row : (r + 1) * per_row]
            )
        ]
        if LABELS in self.viewer.layers:
            self.viewer.layers.remove(LABELS)
        shown = [*shown, self.viewer.add_points(**label_points(cells))]
        names = [layer.name for layer in shown]  # napari hands plugins proxies: use names
        for layer in self.viewer.layers:
            layer.visible = layer.name in names
        order = [layer.name for layer in self.viewer.layers]
        self.viewer.layers.move_multiple([order.index(name) for name in names], len(order))
        self.viewer.canvas.grid.enabled = False
        self.viewer.reset_view()
