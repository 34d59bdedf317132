"""`python -m crypto_cli` is the `crypto-pipeline` command."""

import sys

from crypto_cli import main

sys.exit(main())
