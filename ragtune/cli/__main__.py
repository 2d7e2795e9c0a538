"""`python -m ragtune.cli`: how compare and the serve jobs worker run a step in a child process."""

import sys

from ragtune.cli import main

sys.exit(main())
