"""The Dagster webserver and daemon as users run them: a replay launched through GraphQL makes
the replay sensor run the Spark job and every check; the asset graph renders in Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_assets.aggregation.ohlcv_sinks import REPLAY_RUN_TAG
from crypto_cli.dagster_services import (
    ASSET_GRAPH_PATH,
    DagsterApi,
)
from crypto_pipeline.settings import Settings
from tests.integration.browser import chromium_page
from tests.integration.conftest import free_port
from tests.integration.dagster_helpers import dagster_services, wait_until


@pytest.fixture(scope="module")
def dagster_ui(
    local_stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagsterApi]:
    with dagster_services(local_stack, tmp_path_factory.mktemp("dagster_ui")) as (services, _):
        yield DagsterApi(services.url)


CANDLE_ASSETS = ("mongo_realtime", "influx_ohlcv")


def test_replay_launched_through_graphql_runs_the_job_and_all_checks_pass(
    dagster_ui: DagsterApi,
) -> None:
    replay_id = dagster_ui.launch("replay_job")
    assert dagster_ui.wait_for_run(replay_id, 300) == "SUCCESS"

    triggered = wait_until(
        lambda: dagster_ui.runs_tagged(REPLAY_RUN_TAG, replay_id), 180, "the replay sensor's run"
    )
    assert [run["jobName"] for run in triggered] == ["ohlcv_job"]
    assert dagster_ui.wait_for_run(triggered[0]["runId"], 900) == "SUCCESS"

    statuses = dagster_ui.check_statuses()
    candles = {key: status for key, status in statuses.items() if key[0] in CANDLE_ASSETS}
    # The checks of the candles built from trades run after a replay of trades only.
    assert {status for key, status in statuses.items() if key not in candles} == {"NONE"}
    assert candles == {
        (asset, check): "SUCCEEDED"
        for asset in CANDLE_ASSETS
        for check in (
            "sinks_agree",
            "matches_source",
            "nothing_left_behind",
            "late_rows_repaired",
            "no_gaps",
            "fresh",
        )
    }


def test_asset_graph_renders_in_headless_chromium(dagster_ui: DagsterApi, tmp_path: Path) -> None:
    """After the test above: the graph shows the three assets and both sinks' checks passed."""
    screenshot = tmp_path / "asset_graph.png"
    with chromium_page(
        dagster_ui.url + ASSET_GRAPH_PATH, tmp_path / "profile", free_port()
    ) as page:
        assets = ["kafka_klines", "mongo_realtime", "influx_ohlcv"]
        shown = page.wait_for_texts([*assets, "6 / 6 Passed"], 120)
        time.sleep(3)  # the newsletter dialog, when enabled, opens right after the first render
        later = page.text()
        page.screenshot(screenshot)
    assert shown.count("6 / 6 Passed") == 2
    # The instance's `nux: enabled: false`: a new browser profile gets no newsletter dialog.
    assert "Join the Dagster community" not in later
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000
