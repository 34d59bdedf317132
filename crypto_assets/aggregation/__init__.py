"""Aggregation: the Spark job from Kafka into both sinks. The sink assets (available-now runs after
each replay), the supervised continuous job and its restarts, and the repairs of late rows."""

import dagster as dg

from crypto_assets.aggregation.ohlcv_sinks import ohlcv_job, ohlcv_sinks
from crypto_assets.aggregation.repairs import backfill_job, late_rows_sensor
from crypto_assets.aggregation.streaming import (
    streaming_job,
    streaming_restart_sensor,
    trade_streaming_job,
    trade_streaming_restart_sensor,
)
from crypto_assets.aggregation.trade_candles import (
    replay_done_sensor,
    trade_candles,
    trade_candles_job,
)

defs = dg.Definitions(
    assets=[ohlcv_sinks, trade_candles],
    jobs=[ohlcv_job, streaming_job, backfill_job, trade_candles_job, trade_streaming_job],
    sensors=[
        replay_done_sensor,
        streaming_restart_sensor,
        trade_streaming_restart_sensor,
        late_rows_sensor,
    ],
)
