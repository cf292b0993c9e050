"""``python -m firmware`` is the ``anoncam`` command."""

import sys

from firmware.cli import main

sys.exit(main())
