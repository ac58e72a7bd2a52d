"""``python -m edge_assistant`` is the ``edge-assistant`` command."""

import sys

from .cli import main

sys.exit(main())
