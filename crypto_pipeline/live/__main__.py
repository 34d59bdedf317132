"""`python -m crypto_pipeline.live --exchange NAME --symbols ...`: one live feed (what the
Dagster job and `crypto-pipeline live` run)."""

from __future__ import annotations

import argparse
import logging
import sys

from crypto_pipeline.clients import KafkaUnavailable
from crypto_pipeline.live.feed_sink import FeedError
from crypto_pipeline.live.runner import add_feed_arguments, run_feed
from crypto_pipeline.settings import Settings


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(prog="python -m crypto_pipeline.live")
    add_feed_arguments(parser)
    try:
        return run_feed(parser.parse_args(), Settings.from_env())
    except (FeedError, KafkaUnavailable, ValueError, OSError) as error:
        print(f"live feed: error: {error}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
