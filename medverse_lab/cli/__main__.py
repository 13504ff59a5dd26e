"""``python -m medverse_lab.cli``: the ``medverse-lab`` command (as ``torchrun -m`` runs it)."""

import sys

from . import main

sys.exit(main())
