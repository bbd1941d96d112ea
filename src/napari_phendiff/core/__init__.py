"""The science of napari-phendiff, free of Qt and napari so it runs on a cluster node."""
