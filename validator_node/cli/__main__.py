"""`python -m validator_node.cli ...`: the same entry point as the `validator-node` script."""

import sys

from validator_node.cli import main

sys.exit(main())
