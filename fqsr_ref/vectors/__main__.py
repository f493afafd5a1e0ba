"""`python -m fqsr_ref.vectors`: the command line of cli.py."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
