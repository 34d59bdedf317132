"""A simulated exchange for tests, benchmarks and the demo: it speaks Binance's, Bybit's and
OKX's websocket and REST formats (`protocols.py`) from a generated market (`market.py`), on its
own accelerated clock, with faults injected on request (`server.py`). A stand-in for the network,
not for any of the pipeline's own servers."""
