"""The contract between the launchers of the Spark job (Dagster, CLI, benchmarks) and the job."""

from __future__ import annotations

import dataclasses

import pytest

from crypto_pipeline.settings import InfluxTarget, KafkaTarget, MongoTarget, Settings
from spark_jobs.interface.config import DEFAULT_WINDOWS, OPTIONS, JobConfig

SECRET_URI = "mongodb://app:s3cret@mongo.internal:27018/crypto?authSource=crypto"

CONFIG = JobConfig(
    kafka=KafkaTarget("kafka:19092", "market.klines"),
    mongo=MongoTarget(SECRET_URI, "market", "candles"),
    influx=InfluxTarget("http://influxdb:8086", "t0ken", "org", "market", "bars"),
    checkpoint_dir="/state/checkpoints/market.klines",
    spark_master="spark://master:7077",
    spark_jars_dir="/opt/jars",
    spark_driver_host="dagster-code",
    windows=("1m", "1d"),
    watermark="2 hours",
    trigger="1 second",
    starting_offsets="latest",
    max_offsets_per_trigger=5000,
    sinks=("mongo",),
    status_file="/state/streaming/market.klines.json",
    mongo_writers=2,
    sink_outage_patience_s=60,
)


def test_arguments_and_environment_round_trip_to_the_same_config() -> None:
    assert JobConfig.from_args(CONFIG.to_args(), CONFIG.to_env()) == CONFIG


def test_secrets_travel_only_in_the_environment() -> None:
    args = " ".join(CONFIG.to_args())
    assert "s3cret" not in args
    assert "t0ken" not in args
    assert CONFIG.to_env() == {"MONGO_URI": SECRET_URI, "INFLUXDB_TOKEN": "t0ken"}
    assert "s3cret" not in repr(CONFIG)


def test_every_field_has_exactly_one_option() -> None:
    flags = [option.flag for option in OPTIONS]
    assert len(flags) == len(set(flags))
    fields = {field.name for field in dataclasses.fields(JobConfig)}
    target_fields = {
        f"{target}.{field.name}"
        for target, kind in (
            ("kafka", KafkaTarget),
            ("mongo", MongoTarget),
            ("influx", InfluxTarget),
        )
        for field in dataclasses.fields(kind)
    }
    covered = {option.field for option in OPTIONS} | {"mongo.uri", "influx.token"}
    assert covered == (fields - {"kafka", "mongo", "influx"}) | target_fields


def without_option(args: list[str], flag: str) -> list[str]:
    at = args.index(flag)
    return args[:at] + args[at + 2 :]


@pytest.mark.parametrize(
    "flag", ["--topic", "--mongo-database", "--checkpoint-dir", "--influx-url"]
)
def test_a_left_out_option_without_a_default_is_refused(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        JobConfig.from_args(without_option(CONFIG.to_args(), flag), CONFIG.to_env())
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err


def test_a_missing_secret_is_refused_and_nothing_else_comes_from_the_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        JobConfig.from_args(CONFIG.to_args(), {"MONGO_URI": SECRET_URI})
    assert "INFLUXDB_TOKEN" in capsys.readouterr().err
    host = {**CONFIG.to_env(), "KAFKA_TOPIC": "other", "STACK_DIR": "/elsewhere", "MONGO_DB": "x"}
    assert JobConfig.from_args(CONFIG.to_args(), host) == CONFIG
    # Options with a default may be left out: the job's default, not the host's.
    defaults = without_option(CONFIG.to_args(), "--windows")
    assert JobConfig.from_args(defaults, host).windows == DEFAULT_WINDOWS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"windows": ("5 minutes",)}, "must look like 5m"),
        ({"windows": ("5m", "30s")}, "candles from candles are a minute or longer"),
        ({"windows": ("0m",)}, "a positive length"),  # divided by zero before
        ({"backfill_late": "some"}, "takes one of"),
        ({"sinks": ("mongo", "s3")}, "unknown sinks"),
        ({"mongo": MongoTarget("", "d", "c")}, "URI is empty"),
        ({"source": "ticks"}, "takes candles or trades"),
        ({"dedupe_horizon": "soon"}, "soon"),
        ({"dedupe_horizon": "0 seconds"}, "longer than 0"),  # Spark's timeout refuses 0
    ],
)
def test_unusable_configs_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CONFIG, **change)  # type: ignore[arg-type]


def test_a_launcher_config_from_the_settings_keeps_the_checkpoint_with_its_topic() -> None:
    settings = Settings.from_env({"STACK_DIR": "/state", "KAFKA_TOPIC": "default.topic"})
    mine = JobConfig.from_settings(settings, kafka=KafkaTarget("127.0.0.1:9092", "mine"))
    assert mine.checkpoint_dir == "/state/checkpoints/mine"
    assert JobConfig.from_settings(settings).checkpoint_dir == "/state/checkpoints/default.topic"


def test_the_trades_job_reads_the_trades_topic_and_keeps_its_candles_apart() -> None:
    settings = Settings.from_env({"STACK_DIR": "/state", "KAFKA_TOPIC": "market"})
    mine = MongoTarget("mongodb://127.0.0.1", "db", "mine")
    trades = JobConfig.from_settings(settings, source="trades", mongo=mine)
    assert trades.kafka.topic == "market.trades"
    assert trades.kafka.dlq_topic == "market.trades.dlq"  # where the replay's dead letters go
    assert (trades.mongo.database, trades.mongo.collection) == ("db", "mine_from_trades")
    assert trades.influx.measurement == f"{settings.influx.measurement}_from_trades"
    assert trades.checkpoint_dir == "/state/checkpoints/market.trades"
    assert trades.windows == ("1s", "1m", "5m", "1h")  # seconds: only from trades
    assert JobConfig.from_args(trades.to_args(), trades.to_env()) == trades
