"""A translation's settings in words: one line naming those that shape it and where each came from, and a tag
short enough for a layer or file name. How fast it runs (precision, deep cache, batches) is recorded in the
provenance, not here."""

from __future__ import annotations

from .options import TranslateOptions


def describe(options: TranslateOptions, sources: dict[str, str], direct: bool = False) -> str:
    """One line naming the settings that shape a translation and where each came from."""
    if direct:
        return "direct mapping (no steps, strength or guidance)"
    names = ("strength", "guidance", "negative", "steps", "inversion")
    parts = [f"{n} {getattr(options, n)} ({sources.get(n, 'default')})" for n in names]
    if options.keep_channels:
        parts.append(f"kept {'+'.join(options.keep_channels)} ({sources.get('keep_channels', 'default')})")
    if options.guidance_interval != (0.0, 1.0):
        parts.append(
            f"interval {options.guidance_interval[0]:g}-{options.guidance_interval[1]:g} "
            f"({sources.get('guidance_interval', 'default')})"
        )
    return ", ".join(parts)


def settings_tag(options: TranslateOptions, direct: bool = False) -> str:
    """The settings that shape a translation, short enough for a layer or file name: `s0.3_w4` (strength and
    guidance), then `_null` for classic guidance and `_bdia` for exact inversion when they are used."""
    if direct:
        return ""
    tag = f"s{options.strength:g}_w{options.guidance:g}"
    if options.negative != "source" and options.guidance != 1.0:
        tag += f"_{options.negative}"
    if options.inversion != "ddim":
        tag += f"_{options.inversion}"
    if options.keep_channels:
        tag += "_keep_" + "-".join(options.keep_channels)
    return tag
