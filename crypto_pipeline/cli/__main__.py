"""`python -m crypto_pipeline.cli` is the `crypto-pipeline` command."""

import sys

from crypto_pipeline.cli import main

sys.exit(main())
