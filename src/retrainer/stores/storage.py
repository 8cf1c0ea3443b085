"""Tables and files on local paths or `s3://bucket/prefix` (boto3).

A folder or prefix means every csv/parquet file below it, sorted by name, so batches that land
there are picked up by the next read. Local writes are atomic (temp file, then rename). The S3
endpoint comes from `RETRAINER_S3_ENDPOINT_URL` or boto3's own `AWS_ENDPOINT_URL`, so MinIO or
any S3-compatible server works. Read errors are `DataError` (permanent) or, when the endpoint
can't be reached, `TransientError` (retry).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import stat
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer.errors import DataError, TransientError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.config.settings import Settings

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(uri, *parts))


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise DataError(f"{uri}: expected s3://bucket/key")
    return bucket, key


@functools.cache
def _client(endpoint: str | None) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60
    )
    return boto3.client("s3", endpoint_url=endpoint, config=cfg)


def s3_client() -> Any:
    """One client per endpoint per process; the endpoint is read from the environment each call."""
    endpoint = os.environ.get("RETRAINER_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    return _client(endpoint or None)


@contextlib.contextmanager
def _s3_errors(uri: str) -> Any:
    """Map botocore errors to ours: missing/denied is permanent, unreachable is transient."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            raise DataError(
                f"{uri}: the bucket does not exist; create it or fix the URI in the spec"
            ) from None
        if code in ("NoSuchKey", "404", "NotFound"):
            raise DataError(
                f"{uri}: no such object; check the path in the spec or --data"
            ) from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise DataError(
                f"{uri}: access denied ({code}); check the AWS credentials and bucket policy"
            ) from None
        if code.startswith("5") or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            raise TransientError(f"{uri}: S3 answered {code}; will retry") from exc
        raise DataError(f"{uri}: S3 error {code}: {exc}") from None
    except EndpointConnectionError as exc:
        raise TransientError(f"{uri}: cannot reach the S3 endpoint ({exc}); will retry") from exc
    except BotoCoreError as exc:
        raise TransientError(f"{uri}: S3 request failed ({exc}); will retry") from exc


def _visible(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith((".", "_"))


def list_data_files(uri: str) -> list[str]:
    """The table files behind a URI: itself if it is a file, else every csv/parquet below it."""
    return [f for f, _ in list_data_files_timed(uri)]


def list_data_files_timed(uri: str) -> list[tuple[str, float]]:
    """`list_data_files` with each file's last write (epoch seconds: the file's mtime, or the
    object's LastModified as S3 reports it), from the same listing."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        client = s3_client()
        with _s3_errors(uri):
            if key and not key.endswith("/"):
                try:
                    head = client.head_object(Bucket=bucket, Key=key)
                    return [(uri, head["LastModified"].timestamp())]
                except Exception as exc:  # not a single object: treat as a prefix
                    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                    if code not in ("404", "NoSuchKey", "NotFound"):
                        raise
            prefix = key.rstrip("/") + "/" if key else ""
            objects: list[tuple[str, float]] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                objects += [
                    (o["Key"], o["LastModified"].timestamp()) for o in page.get("Contents", [])
                ]
        timed = sorted(
            (f"s3://{bucket}/{k}", t)
            for k, t in objects
            if k.lower().endswith(TABLE_SUFFIXES) and _visible(k)
        )
        if not timed:
            raise DataError(
                f"{uri}: no csv or parquet objects under this prefix; land a batch there or fix data.train"
            )
        return timed
    path = Path(uri)
    if path.is_file():
        return [(str(path), path.stat().st_mtime)]
    if not path.exists():
        raise DataError(
            f"{uri}: no such file or folder; fix data.train in the spec or the --data/data_path given"
        )
    timed = []
    for p in path.rglob("*"):
        if p.suffix.lower() in TABLE_SUFFIXES and _visible(p.name):
            try:
                st = p.stat()
            except FileNotFoundError:  # removed since the listing (retention, a replace)
                continue
            if stat.S_ISREG(st.st_mode):
                timed.append((str(p), st.st_mtime))
    if not timed:
        raise DataError(
            f"{uri}: the folder holds no .csv or .parquet files; land a batch there or fix data.train"
        )
    return sorted(timed)


def _parse(data: bytes, uri: str) -> pd.DataFrame:
    import pandas as pd

    suffix = Path(uri.split("?")[0]).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{uri}: unsupported file type {suffix or '(none)'}; use .csv or .parquet")
    if not data:
        raise DataError(f"{uri}: the file is empty (0 bytes); expected a header row and data")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(io.BytesIO(data))
            if any("." in str(c) for c in frame.columns):  # pandas renames a repeat a -> a.1
                raw = pd.read_csv(io.BytesIO(data), nrows=1, header=None, dtype=str).iloc[0]
                repeated = sorted(str(n) for n, k in Counter(raw).items() if k > 1)
                if repeated:
                    raise DataError(
                        f"{uri}: the columns {repeated[:10]} appear more than once in the header "
                        "(pandas would read the second as a new column, a.1); give each column "
                        "one name"[:600]
                    )
            return frame
        return pd.read_parquet(io.BytesIO(data))
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{uri}: not readable as UTF-8 text ({exc.reason}); save the csv as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{uri}: the file has no columns; expected a header row and data") from None
    except Exception as exc:  # pyarrow/parser errors: a corrupt or mislabelled file
        raise DataError(
            f"{uri}: cannot be read as {suffix[1:]} ({type(exc).__name__}: {exc})"[:600]
        ) from None


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            return bytes(s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{uri}: no such file") from None
    except OSError as exc:
        raise DataError(f"{uri}: cannot read ({exc.strerror})") from None


def read_table(uri: str) -> pd.DataFrame:
    """One file, or every file of a folder/prefix concatenated (their columns must agree, and
    each column must hold one kind of value: numbers, text or true/false, in every batch)."""
    import pandas as pd

    files = list_data_files(uri)
    frames = []
    for f in files:
        try:
            data = read_bytes(f)
        except DataError:
            if f != uri and not exists(f):  # listed, then removed (replaced, compacted)
                raise TransientError(
                    f"{f} was removed while {uri} was read; reading the folder again will do"
                ) from None
            raise
        frames.append(_parse(data, f))
    first = list(frames[0].columns)
    for f, frame in zip(files[1:], frames[1:], strict=True):
        if list(frame.columns) != first and set(frame.columns) != set(first):
            missing = sorted(set(first) - set(frame.columns))
            extra = sorted(set(frame.columns) - set(first))
            raise DataError(
                f"{f}: its columns differ from {files[0]} (missing {missing}, extra {extra}); "
                "every batch in a folder must have the same columns"
            )
    if len(frames) == 1:
        return frames[0]
    # A header-only batch adds no rows; concatenated, it would turn every integer column of the
    # batches that have rows into object, and fail their numeric checks
    kept = [(f, fr) for f, fr in zip(files, frames, strict=True) if len(fr)] or [
        (files[0], frames[0])
    ]
    if len(kept) < len(frames):
        empty = [f for f, fr in zip(files, frames, strict=True) if not len(fr)]
        log.warning("%s: left out %d batch(es) with no rows: %s", uri, len(empty), empty[:10])
    _check_kinds(kept, first)
    return pd.concat([fr[first] for _, fr in kept], ignore_index=True)


def _kind(values: pd.Series) -> str | None:
    """What a batch's column holds, by its values rather than its dtype: a true/false column
    with a missing value is object-typed, and still true/false."""
    from pandas.api.types import infer_dtype

    kind = infer_dtype(values, skipna=True)
    if kind == "empty":
        return None  # all missing: any kind
    if kind == "boolean":
        return "true/false"
    if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
        return "numbers"
    return "text"


def _check_kinds(batches: list[tuple[str, pd.DataFrame]], columns: list[str]) -> None:
    """Refuse a column that holds numbers in one batch and text in another: concatenated it
    would mix floats and strings, pass validation, and fail the snapshot's Parquet write."""
    for col in columns:
        seen: dict[str, str] = {}
        for f, frame in batches:
            kind = _kind(frame[col])
            if kind is not None:
                seen.setdefault(kind, f)
        if len(seen) > 1:
            where = "; ".join(f"{kind} in {f}" for kind, f in seen.items())
            raise DataError(
                f"column {str(col)[:100]!r} holds different kinds of value across the batches "
                f"({where}); make them agree (codes that are sometimes numbers: quote them all "
                "as text, or write them all as numbers)"[:800]
            )


class ParquetColumns:
    """A local Parquet file as a table whose columns are read when asked for, one at a time.

    What `retrainer drift` compares: two files of a million rows never sit in memory together,
    and nothing here imports pandas unless a column is not numeric. Numeric columns come back
    as numpy arrays (integers with nulls as float64 with NaN), the others as pandas Series, as
    `read_table` gives them.
    """

    def __init__(self, path: str) -> None:
        import numpy as np
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(path)
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except Exception as exc:  # a corrupt or mislabelled file
            raise DataError(
                f"{path}: cannot be read as parquet ({type(exc).__name__}: {exc})"[:600]
            ) from None
        self.path = path
        schema = self._file.schema_arrow
        pandas_meta = schema.pandas_metadata or {}
        index = {c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)}
        self.columns = [n for n in schema.names if n not in index]
        repeated = sorted(n for n, k in Counter(self.columns).items() if k > 1)
        if repeated:
            raise DataError(
                f"{path}: the columns {repeated[:10]} appear more than once; give each column "
                "one name"[:600]
            )
        self._numeric = {n for n in self.columns if _arrow_numeric(schema.field(n).type)}
        self.dtypes = {
            n: np.dtype(np.float64) if n in self._numeric else np.dtype(object)
            for n in self.columns
        }
        self._rows = int(self._file.metadata.num_rows)
        self._last: tuple[str, Any] | None = None

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, name: str) -> Any:
        if self._last is not None and self._last[0] == name:
            return self._last[1]
        if name not in self.dtypes:
            raise KeyError(name)
        try:
            column = self._file.read(columns=[name], use_threads=False).column(0)
        except Exception as exc:
            raise DataError(
                f"{self.path}: column {name!r} cannot be read ({type(exc).__name__}: {exc})"[:600]
            ) from None
        if name in self._numeric:
            values: Any = _arrow_numbers(column)
        else:
            values = column.to_pandas()
        self._last = (name, values)
        return values


_ARROW_FLOATS = {"halffloat": "float16", "float": "float32", "double": "float64"}


def _arrow_numbers(column: Any) -> Any:
    """A numeric Arrow column as numpy, as pandas reads it: integers stay integers unless nulls
    make them float64 with NaN (Evidently's mode bins integer columns differently). From the
    buffers: pyarrow's own to_numpy imports pandas, a quarter of a second of the command."""
    import numpy as np

    a = column.combine_chunks()
    dtype = np.dtype(_ARROW_FLOATS.get(str(a.type), str(a.type)))
    validity, data = a.buffers()[:2]
    values = np.frombuffer(data, dtype=dtype, count=len(a), offset=a.offset * dtype.itemsize)
    if not a.null_count:
        return values
    bits = np.unpackbits(
        np.frombuffer(validity, np.uint8), bitorder="little", count=a.offset + len(a)
    )[a.offset :]
    out = values.astype(np.float64)  # a copy, never the file's buffer
    out[bits == 0] = np.nan
    return out


def _arrow_numeric(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def read_columns(uri: str) -> Any:
    """A table to compare column by column: a local Parquet file is read one column at a time
    (`ParquetColumns`); anything else (csv, a folder, s3://) as `read_table` reads it."""
    path = Path(uri)
    if not is_s3(uri) and path.is_file() and path.suffix.lower() == ".parquet":
        if path.stat().st_size == 0:
            raise DataError(f"{uri}: the file is empty (0 bytes); expected a header row and data")
        return ParquetColumns(str(path))
    return read_table(uri)


def write_bytes(uri: str, data: bytes) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_table(df: pd.DataFrame, uri: str) -> None:
    suffix = Path(uri).suffix.lower()
    buf = io.BytesIO()
    if suffix == ".csv":
        df.to_csv(buf, index=False)
    elif suffix in (".parquet", ".pq"):
        df.to_parquet(buf, index=False)
    else:
        raise DataError(f"{uri}: unsupported file type {suffix or '(none)'}; use .csv or .parquet")
    write_bytes(uri, buf.getvalue())


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            resp = s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return bool(resp.get("KeyCount"))
    return Path(uri).exists()


def remove(uri: str) -> None:
    """Delete a file or a whole folder/prefix; a missing one is fine. Never a whole bucket."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        if not key.strip("/"):
            raise ValueError(f"{uri}: refusing to delete a whole bucket")
        client = s3_client()
        with _s3_errors(uri):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objs:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": objs})
        return
    import shutil

    path = Path(uri)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def delete_file(uri: str) -> None:
    """Delete one file or object, that exact key (not a prefix); a missing one is fine."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().delete_object(Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)


def table_digest(df: pd.DataFrame) -> str:
    """A short content digest: same rows, columns and dtypes give the same digest, whatever the file."""
    import pandas as pd

    h = hashlib.sha256()
    h.update("|".join(f"{c}:{t}" for c, t in df.dtypes.astype(str).items()).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def within(uri: str, root: str) -> bool:
    """Whether ``uri`` lies in ``root``: the root itself, or under it when it is a folder or a
    prefix (a root naming a .csv or .parquet file stands for its folder). Local paths are
    compared resolved, so no .. or link leads out; s3 keys may hold no .. segment."""
    is_file = Path(root.rstrip("/")).suffix.lower() in TABLE_SUFFIXES
    if is_s3(root) or is_s3(uri):
        if not (is_s3(root) and is_s3(uri)):
            return False
        base = (root.rsplit("/", 1)[0] if is_file else root.rstrip("/")) + "/"
        return uri == root or (uri.startswith(base) and ".." not in uri[len(base) :].split("/"))
    try:
        target, folder = Path(uri).resolve(), Path(root).resolve()
    except (OSError, RuntimeError):
        return False
    if is_file:
        folder = folder.parent
    return target == folder or folder in target.parents


def resolve_source(train: str, settings: Settings) -> str:
    """Relative local paths in a spec are relative to the project (the folder holding models/)."""
    from pathlib import Path

    if "://" in train or Path(train).is_absolute():
        return train
    return str((settings.models_dir.parent / train).resolve())
