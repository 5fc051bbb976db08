"""`python -m betterconv ...` is the `betterconv` command."""
import sys

from .cli import main

sys.exit(main())
