"""`python -m server.auth`: manage bearer tokens (see server/auth/cli.py)."""

import sys

from server.auth.cli import main

if __name__ == "__main__":  # importing the module (as the error-code test does) must not run the CLI
    sys.exit(main())
