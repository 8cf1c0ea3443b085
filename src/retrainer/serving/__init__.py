"""The serving API: champions of every spec behind FastAPI, batched, logged, hot-reloadable."""
