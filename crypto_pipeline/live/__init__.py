"""Live market data from exchanges: one adapter per exchange's documented protocol
(`exchanges/`), the feed that keeps a websocket subscribed and refills every gap over REST
(`feed.py`, `refill.py`), what it sends to Kafka (`feed_sink.py`), and the simulated exchange the
tests and the demo use (`simulator/`)."""
