"""What serving's shadow wrote: the challenger's predictions beside the champion's, per row.

Joined with the feedback log on (`_request_id`, `_row`) it gives paired labelled predictions of
the two versions (the gate's paired statistics); alone, their agreement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from retrainer.config.settings import Settings
from retrainer.steps.monitor.window import read_log

if TYPE_CHECKING:
    import pandas as pd

SHADOW_COLUMNS = (
    "_request_id",
    "_row",
    "_ts",
    "_champion_version",
    "_challenger_version",
    "_champion_prediction",
    "_prediction",
    "_champion_score",
    "_score",
)


def read_shadow(settings: Settings, model: str, since: datetime | None = None) -> pd.DataFrame:
    """The model's mirrored rows with `_ts` >= `since` (all of them without), oldest first;
    an empty frame (with the columns) when there are none. Flushed rows only: serving compacts
    its spool every few seconds, or at once on POST /flush."""
    import pandas as pd

    df = read_log(settings.shadow_log_root, model, since, datetime.now(UTC))
    if df.empty:
        return pd.DataFrame(columns=list(SHADOW_COLUMNS))
    return df.sort_values(["_ts", "_request_id", "_row"], kind="stable").reset_index(drop=True)
