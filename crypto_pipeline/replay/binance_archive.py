"""Download Binance's public monthly kline files (data.binance.vision) for users with internet."""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

DEFAULT_BASE_URL = "https://data.binance.vision"
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class FetchError(RuntimeError):
    pass


def monthly_klines_url(base_url: str, symbol: str, interval: str, month: str) -> str:
    name = f"{symbol}-{interval}-{month}"
    return f"{base_url.rstrip('/')}/data/spot/monthly/klines/{symbol}/{interval}/{name}.zip"


def fetch_monthly_klines(
    symbol: str, interval: str, month: str, out_dir: Path, base_url: str = DEFAULT_BASE_URL
) -> Path:
    """Download and unzip one month of klines; returns the CSV path (symbol in its name)."""
    symbol = symbol.upper()
    if not MONTH.match(month):
        raise FetchError(f"month must look like 2025-01, got {month!r}")
    url = monthly_klines_url(base_url, symbol, interval, month)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        raise FetchError(f"{url}: HTTP {error.code}") from None
    except (urllib.error.URLError, TimeoutError) as error:
        raise FetchError(f"{url}: {getattr(error, 'reason', error)}") from None
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile:
        raise FetchError(f"{url}: the download is not a zip file") from None
    members = [name for name in archive.namelist() if name.endswith(".csv")]
    if len(members) != 1:
        raise FetchError(f"{url}: expected one CSV in the zip, found {members}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / Path(members[0]).name
    target.write_bytes(archive.read(members[0]))
    return target
