"""What a person asks of a replay, one model for both ways to ask: `crypto-pipeline replay` builds
its options from these fields (crypto_cli) and the Dagster config of `kafka_klines` is this model
(crypto_assets/ingestion/market_data.py). Where the replay goes (topic, partitions, retention,
the future-time rule) comes from the settings or the resources, not from the request."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from crypto_pipeline.replay.producer import ENGINES, ReplayOptions
from crypto_pipeline.replay.row_fields import iso_to_ms


def time_ms(text: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or epoch milliseconds."""
    return int(text) if text.isdigit() else iso_to_ms(text)


class ReplayRequest(BaseModel):
    path: str = Field(description="CSV or CSV.gz to replay (canonical or Binance)")
    symbols: list[str] = Field(
        default_factory=list, description="only these symbols (all if empty)"
    )
    start: str | None = Field(
        default=None, description="first event time, ISO-8601 or epoch ms, inclusive"
    )
    end: str | None = Field(default=None, description="last event time, exclusive")
    speed: float | None = Field(
        default=None,
        description="1 = real event-time spacing, 60 = 60x faster; none (`max` on the command "
        "line) = as fast as possible",
    )
    loop: bool = Field(
        default=False, description="start over, event times shifted by the file's span (endless)"
    )
    limit: int | None = Field(default=None, description="stop after this many messages")
    rebase_now: bool = Field(
        default=False,
        description="shift event times so the file ends now; a looping replay then goes on in "
        "real time (never ahead of the clock)",
    )
    resume: bool = Field(
        default=False,
        description="skip the lines of this file already in the topic or its dead letters: "
        "finishes a replay that failed or was interrupted without sending anything twice",
    )
    engine: str = Field(
        default="auto",
        description=f"one of {', '.join(ENGINES)}. bulk: worker processes and librdkafka, as fast "
        "as possible; paced: kafka-python, paced by event time; auto: bulk for a replay as fast "
        "as possible without loop or rebase_now",
    )

    def options(
        self,
        topic: str,
        partitions: int,
        retention_ms: int | None,
        future_tolerance_ms: int,
        base_dir: Path | None = None,
    ) -> ReplayOptions:
        """The replay's options; a relative path read from `base_dir` (None: as given, from the
        working directory: the path is the file's name in its messages' lineage)."""
        path = Path(self.path)
        return ReplayOptions(
            path=path if base_dir is None or path.is_absolute() else base_dir / path,
            topic=topic,
            speed=self.speed,
            symbols=frozenset(s.strip().upper() for s in self.symbols if s.strip()) or None,
            start_ms=None if self.start is None else time_ms(self.start),
            end_ms=None if self.end is None else time_ms(self.end),
            limit=self.limit,
            loop=self.loop,
            rebase_now=self.rebase_now,
            partitions=partitions,
            retention_ms=retention_ms,
            resume=self.resume,
            engine=self.engine,
            future_tolerance_ms=future_tolerance_ms,
        )
