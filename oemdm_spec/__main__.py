"""``python -m oemdm_spec`` is the ``oemdm`` command."""

import sys

from oemdm_spec.cli import main

sys.exit(main())
