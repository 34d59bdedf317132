"""The adapters read the exchanges' documented messages: each example below is the one in the
exchange's API documentation, and the expected values are read off it by hand."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from crypto_pipeline.live.exchanges import EXCHANGES, exchange_named
from crypto_pipeline.live.exchanges.base import RestRejected
from crypto_pipeline.live.market import (
    FrameError,
    KlineUpdate,
    TradeUpdate,
    canonical_symbol,
    split_pair,
)

BINANCE, BYBIT, OKX = (EXCHANGES[name] for name in ("binance", "bybit", "okx"))


def test_binance_kline_trade_and_rest_rows() -> None:
    kline = (
        '{"e":"kline","E":1672515782136,"s":"BNBBTC","k":{"t":1672515780000,"T":1672515839999,'
        '"s":"BNBBTC","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025",'
        '"l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500","Q":"0.500",'
        '"B":"123456"}}'
    )
    assert BINANCE.parse(kline).klines == [
        KlineUpdate(
            "binance",
            "BNBBTC",
            1672515780000,
            0.001,
            0.0025,
            0.0015,
            0.002,
            1000.0,
            1.0,
            100,
            closed=False,
        )
    ]
    trade = (
        '{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100",'
        '"T":1672515782136,"m":true,"M":true}'
    )
    assert BINANCE.parse(trade).trades == [
        TradeUpdate("binance", "BNBBTC", "12345", 1672515782136, 0.001, 100.0, "sell")
    ]
    combined = json.dumps({"stream": "bnbbtc@trade", "data": json.loads(trade)})
    assert BINANCE.parse(combined).trades == BINANCE.parse(trade).trades
    rows = (
        '[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",'
        '1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]'
    )
    assert BINANCE.parse_klines("BNBBTC", rows.encode()) == [
        KlineUpdate(
            "binance",
            "BNBBTC",
            1499040000000,
            0.0163479,
            0.8,
            0.015758,
            0.015771,
            148976.11427815,
            2434.19055334,
            308,
            closed=False,
        )
    ]
    assert BINANCE.parse('{"result":null,"id":1}').klines == []
    assert BINANCE.parse('{"error":{"code":2,"msg":"Invalid request"},"id":1}').error


def test_bybit_kline_trade_and_rest_rows() -> None:
    kline = (
        '{"topic":"kline.5.BTCUSDT","data":[{"start":1672324800000,"end":1672325099999,'
        '"interval":"5","open":"16649.5","close":"16677","high":"16677","low":"16608",'
        '"volume":"2.081","turnover":"34666.4005","confirm":false,"timestamp":1672324988882}],'
        '"ts":1672324988882,"type":"snapshot"}'
    )
    assert BYBIT.parse(kline).klines == [
        KlineUpdate(
            "bybit",
            "BTCUSDT",
            1672324800000,
            16649.5,
            16677.0,
            16608.0,
            16677.0,
            2.081,
            34666.4005,
            None,
            closed=False,
        )
    ]
    trade = (
        '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{'
        '"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick",'
        '"i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}'
    )
    assert BYBIT.parse(trade).trades == [
        TradeUpdate(
            "bybit",
            "BTCUSDT",
            "20f43950-d8dd-5b31-9112-a178eb6023af",
            1672304486865,
            16578.5,
            0.001,
            "buy",
        )
    ]
    answer = (
        '{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSD","category":"inverse","list":['
        '["1670608800000","17071","17073","17027","17055.5","268611","15.74462667"],'
        '["1670605200000","17071.5","17071.5","17061","17071","4177","0.24469757"]]},'
        '"retExtInfo":{},"time":1672025956592}'
    )
    assert [k.open_time_ms for k in BYBIT.parse_klines("BTCUSD", answer.encode())] == [
        1670608800000,
        1670605200000,
    ]
    assert BYBIT.parse_klines("BTCUSD", answer.encode())[1].close == 17071.0
    assert BYBIT.parse('{"success":false,"ret_msg":"Invalid symbol","op":"subscribe"}').error
    assert BYBIT.parse('{"success":true,"ret_msg":"pong","op":"ping"}').klines == []
    with pytest.raises(RestRejected) as limited:
        BYBIT.parse_klines("BTCUSDT", b'{"retCode":10006,"retMsg":"Too many visits!"}')
    assert limited.value.retry_after_s is not None


def test_okx_candle_trade_and_rest_rows() -> None:
    candle = (
        '{"arg":{"channel":"candle1D","instId":"BTC-USDT"},"data":[["1597026383085","8533.02",'
        '"8553.74","8527.17","8548.26","45247","529.5858061","529.5858061","0"]]}'
    )
    assert OKX.parse(candle).klines == [
        KlineUpdate(
            "okx",
            "BTCUSDT",
            1597026383085,
            8533.02,
            8553.74,
            8527.17,
            8548.26,
            45247.0,
            529.5858061,
            None,
            closed=False,
        )
    ]
    trade = (
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        '"tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy",'
        '"ts":"1630048897897","count":"3","source":"0","seqId":1234}]}'
    )
    assert OKX.parse(trade).trades == [
        TradeUpdate("okx", "BTCUSDT", "130639474", 1630048897897, 42219.9, 0.12060306, "buy")
    ]
    answer = (
        '{"code":"0","msg":"","data":[["1597026383085","3.721","3.743","3.677","3.708",'
        '"8422410","22698348.04828491","12698348.04828491","1"]]}'
    )
    assert OKX.parse_klines("BTC-USDT", answer.encode()) == [
        KlineUpdate(
            "okx",
            "BTCUSDT",
            1597026383085,
            3.721,
            3.743,
            3.677,
            3.708,
            8422410.0,
            12698348.04828491,
            None,
            closed=False,
        )
    ]
    assert OKX.parse("pong").klines == []
    assert OKX.parse('{"event":"error","code":"60018","msg":"doesn\'t exist"}').error


@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '{"e":"kline","k":{"t":"x"}}',
        '{"topic":"kline.1.X","data":7}',
        '{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[["1","2"]]}',
    ],
)
def test_malformed_frames_are_errors_with_a_reason(exchange: str, frame: str) -> None:
    with pytest.raises(FrameError) as error:
        EXCHANGES[exchange].parse(frame)
    assert str(error.value)


def test_one_spelling_of_a_symbol_for_every_exchange() -> None:
    for spelling in ("btcusdt", "BTC-USDT", "btc/usdt", "BTC_USDT", " BTCUSDT "):
        assert canonical_symbol(spelling) == "BTCUSDT"
    assert split_pair("ETHBTC") == ("ETH", "BTC")
    assert split_pair("1000PEPE-USDT") == ("1000PEPE", "USDT")
    assert OKX.native_symbol("solusdc") == "SOL-USDC"
    assert BINANCE.native_symbol("sol-usdc") == "SOLUSDC"
    with pytest.raises(ValueError, match="base from quote"):
        split_pair("FOOBAR")


def test_rest_requests_ask_for_one_page_of_a_range() -> None:
    start, end = 1_700_000_000_000, 1_700_000_060_000
    for name, (first, last) in {
        "binance": ("startTime", "endTime"),
        "bybit": ("start", "end"),
        "okx": ("before", "after"),
    }.items():
        query = parse_qs(
            urlsplit(EXCHANGES[name].klines_url("http://x", "BTCUSDT", "1m", start, end)).query
        )
        bounds = int(query[first][0]), int(query[last][0])
        # OKX's bounds are exclusive, the others' inclusive.
        assert bounds == ((start - 1, end + 1) if name == "okx" else (start, end))
    with pytest.raises(ValueError, match="no '2m' candles"):
        exchange_named("binance").native_interval("2m")
    with pytest.raises(ValueError, match="unknown exchange"):
        exchange_named("mtgox")
