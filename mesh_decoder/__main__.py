"""``python -m mesh_decoder``: the ``mesh-decoder`` command, where the console script is not on ``PATH``."""

import sys

from ._entry import main

sys.exit(main())
