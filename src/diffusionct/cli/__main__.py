"""``python -m diffusionct.cli`` (torchrun's way of starting the command)."""

import sys

from diffusionct.cli import main

sys.exit(main())
