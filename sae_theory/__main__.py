"""``python -m sae_theory`` is ``sae-theory``."""

import sys

from sae_theory.cli import main

sys.exit(main())
