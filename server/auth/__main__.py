import sys

from server.auth.cli import main

sys.exit(main())
