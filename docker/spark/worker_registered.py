"""Health check of a Spark worker container: the master lists this worker as ALIVE.

Usage: python worker_registered.py <master UI URL> <worker host>"""

import json
import sys
import urllib.request

master_ui, worker_host = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(f"{master_ui}/json/", timeout=5) as response:
    workers = json.load(response).get("workers", [])
alive = any(w.get("host") == worker_host and w.get("state") == "ALIVE" for w in workers)
sys.exit(0 if alive else 1)
