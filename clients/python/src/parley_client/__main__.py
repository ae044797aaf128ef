"""``python -m parley_client`` runs the ``parley`` command."""

import sys

from parley_client.cli.main import main

sys.exit(main())
