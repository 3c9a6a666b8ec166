"""`python -m taskplatform_client`: the `taskplatform` command line."""

import sys

from taskplatform_client.cli import main

sys.exit(main())
