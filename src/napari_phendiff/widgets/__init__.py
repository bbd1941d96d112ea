"""The napari docks: thin Qt widgets that gather parameters, run a core generator in napari's thread_worker and
turn its events into progress and layers. No science here: everything they compute comes from `core`.

    translate_dock.TranslateDock   the Translate dock (core.translate.iter_translate)
    train_dock.TrainDock           the Train dock (core.training.run.iter_train)
"""
