"""The raw market-data stream: the Kafka topic, filled by replaying a CSV file.

(No `from __future__ import annotations` here: Dagster reads the config annotations at run time.)"""

import dagster as dg
from pydantic import Field

from crypto_assets.resources import KafkaResource
from crypto_pipeline.reconcile import ReplayScope
from crypto_pipeline.replay.producer import ReplayOptions, replay
from crypto_pipeline.replay.request import ReplayRequest
from crypto_pipeline.replay.row_fields import ms_to_iso
from crypto_pipeline.settings import REPO_ROOT, SAMPLE_FILE


class ReplayConfig(ReplayRequest, dg.Config):
    """What to replay (crypto_pipeline/replay/request.py); relative paths are read from the
    repository root."""

    path: str = Field(default=SAMPLE_FILE, description="CSV or CSV.gz to replay")

    def replay_options(self, kafka: KafkaResource) -> ReplayOptions:
        return self.options(
            kafka.topic,
            kafka.partitions,
            kafka.retention_ms,
            kafka.future_tolerance_s * 1000,
            REPO_ROOT,
        )


@dg.asset(
    group_name="ingestion",
    kinds={"kafka", "python"},
    description="Candles in the Kafka topic, one JSON message per CSV row, key = symbol. "
    "Materialized by replaying a CSV file; bad rows go to <topic>.dlq.",
)
def kafka_klines(
    context: dg.AssetExecutionContext, config: ReplayConfig, kafka: KafkaResource
) -> dg.MaterializeResult:
    options = config.replay_options(kafka)
    context.log.info(f"replaying {options.path} into {options.topic}")
    summary = replay(options, kafka.bootstrap_servers, show_progress=False)
    for line in summary.lines():
        context.log.info(line)
    if summary.rejected:
        context.log.warning(f"{summary.rejected} rows rejected: {summary.rejection_reasons}")
    return dg.MaterializeResult(
        metadata={
            "source_file": str(options.path),
            "topic": summary.topic,  # a trade file's: <topic>.trades
            "rows_sent": summary.sent,
            "rows_rejected": summary.rejected,
            "rejection_reasons": summary.rejection_reasons,
            "messages_per_s": round(summary.messages_per_s, 1),
            "bytes_sent": summary.bytes_sent,
            "end_offsets": {str(p): o for p, o in summary.end_offsets.items()},
            "first_event_time": ms_to_iso(summary.first_event_ms),
            "last_event_time": ms_to_iso(summary.last_event_ms),
            "interrupted": summary.interrupted,
            "replay_scope": ReplayScope(
                path=str(options.path),
                symbols=tuple(sorted(options.symbols or ())),
                start_ms=options.start_ms,
                end_ms=options.end_ms,
                limit=options.limit,
                event_shift_ms=summary.event_shift_ms,
                pass_span_ms=summary.pass_span_ms,
            ).to_metadata(),
        }
    )
