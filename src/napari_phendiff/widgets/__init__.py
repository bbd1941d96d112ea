"""The napari docks: thin Qt widgets that gather parameters, run a core generator in napari's thread_worker and
turn its events into progress and layers. No science here: everything they compute comes from `core`.

    translate_dock.TranslateDock   the Translate dock (core.translate.iter_translate)
    train_dock.TrainDock           the Train dock (core.training.run.iter_train)

Each dock is one module that lays out its parts; each part (a section or panel: its controls and what they do) is a
mixin in a private module of this package, named in the dock's docstring and in docs/architecture.md.
"""
