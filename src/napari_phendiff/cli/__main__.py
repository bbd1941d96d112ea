"""`python -m napari_phendiff.cli`: the `phendiff` command, as torchrun and accelerate launch start it."""

import sys

from . import main

sys.exit(main())
