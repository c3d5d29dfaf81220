"""``python -m funcattr`` is the ``funcattr`` command (so ``torchrun -m funcattr ...`` works)."""

import sys

from .cli import main

sys.exit(main())
