"""`python -m alexnet ...` (and `torchrun ... -m alexnet train ...`): the same as the `alexnet` command."""
import sys

from .cli import main

sys.exit(main())
