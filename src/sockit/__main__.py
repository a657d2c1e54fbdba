"""``python -m sockit``: the same as the ``sockit`` command."""

import sys

from sockit.cli.main import main

sys.exit(main())
