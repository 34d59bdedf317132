"""The serving layer: the candles API, its live push and the chart page (`crypto-pipeline serve`).
It reads what the pipeline wrote (MongoDB, the candles topics, the heartbeats), never writes."""
