"""Serving's own settings, from `RETRAINER_SERVING_*` environment variables (README: Guarantees).

Kept beside serving rather than in the platform settings: only `retrainer serve` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from retrainer.config.settings import Settings

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ServingOptions:
    spool_dir: Path  # the local write-ahead spool (default <home>/serving_spool)
    spool_max_mb: float = 1024.0  # at this size requests get 503 + Retry-After
    spool_warn_fraction: float = 0.8  # from this share of the bound: metric, /ready, log line
    fsync: bool = False  # fsync each micro-batch: survives power loss, not only a crash
    compact_seconds: float = 5.0  # how often the spool is compacted to Parquet
    retention_days: float = 90.0  # logged rows older than this are pruned (0: keep forever)
    upload_retry_max_seconds: float = 30.0  # back-off cap between upload attempts
    max_body_bytes: int = 2_000_000
    body_seconds: float = 30.0  # a request body not all arrived by then is answered 408
    head_seconds: float = 10.0  # a request line and headers not all arrived by then: 408, closed
    challenger_seconds: float = 5.0  # a canary challenger's answer later than this: the champion's
    docs: bool | None = None  # /docs and /openapi.json; default: on, behind the token if set
    shadow_queue_rows: int = 20_000  # mirrored rows waiting for a shadow; beyond, dropped
    log_enabled: bool = True  # False only to measure the log's cost (bench): answers unlogged

    @classmethod
    def from_env(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> ServingOptions:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"spool_dir": settings.home / "serving_spool"}
        for f in fields(cls):
            key = f"RETRAINER_SERVING_{f.name.upper()}"
            raw = env.get(key, "").strip()
            if not raw:
                continue
            kind = str(f.type)
            try:
                if f.name == "spool_dir":
                    values[f.name] = Path(raw).expanduser().resolve()
                elif "bool" in kind:
                    if raw.lower() not in _TRUE | _FALSE:
                        raise ValueError
                    values[f.name] = raw.lower() in _TRUE
                elif kind == "int":
                    values[f.name] = int(raw)
                else:
                    values[f.name] = float(raw)
            except ValueError:
                raise ValueError(
                    f"{key}: expected {kind.replace(' | None', '')}; found {raw!r}"
                ) from None
        opts = cls(**values)  # type: ignore[arg-type]
        for name in ("body_seconds", "head_seconds", "challenger_seconds"):
            if not 0 < getattr(opts, name) < float("inf"):
                raise ValueError(
                    f"RETRAINER_SERVING_{name.upper()} must be a number of seconds > 0; found "
                    f"{getattr(opts, name)}"
                )
        if opts.spool_max_mb <= 0 or not 0 < opts.spool_warn_fraction <= 1:
            raise ValueError(
                "RETRAINER_SERVING_SPOOL_MAX_MB must be > 0 and "
                "RETRAINER_SERVING_SPOOL_WARN_FRACTION in (0, 1]"
            )
        return opts

    @property
    def spool_max_bytes(self) -> int:
        return int(self.spool_max_mb * 1024 * 1024)
