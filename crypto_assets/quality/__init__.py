"""Quality: proof that the aggregates landed in both sinks and are right. The asset checks, the
nightly reconciliation, and the continuous job's health and freshness."""

import dagster as dg

from crypto_assets.quality.checks import (
    fresh,
    late_rows_repaired,
    matches_source,
    nightly_reconciliation,
    no_gaps,
    nothing_left_behind,
    reconciliation_job,
    sinks_agree,
)
from crypto_assets.quality.stream_health import (
    freshness_job,
    streaming_health_sensor,
    trade_freshness_job,
)
from crypto_assets.quality.trade_checks import (
    trade_fresh,
    trade_late_rows_repaired,
    trade_matches_source,
    trade_nothing_left_behind,
    trade_sinks_agree,
)

defs = dg.Definitions(
    asset_checks=[
        sinks_agree,
        matches_source,
        nothing_left_behind,
        late_rows_repaired,
        no_gaps,
        fresh,
        trade_sinks_agree,
        trade_matches_source,
        trade_late_rows_repaired,
        trade_nothing_left_behind,
        trade_fresh,
    ],
    jobs=[reconciliation_job, freshness_job, trade_freshness_job],
    schedules=[nightly_reconciliation],
    sensors=[streaming_health_sensor],
)
