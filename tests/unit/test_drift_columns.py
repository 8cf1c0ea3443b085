"""`retrainer drift` reads Parquet column by column and selects quantiles from a bracket: the
same PSI, the same verdict, bit for bit, as reading whole tables with pandas and np.quantile."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from retrainer.cli import app
from retrainer.core import drift
from retrainer.core.drift import compare_tables, quantiles
from retrainer.errors import DataError
from retrainer.stores.storage import ParquetColumns, read_columns, read_table

runner = CliRunner()
DECILES = np.linspace(0.0, 1.0, 11)[1:-1]


def columns(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "normal": rng.normal(0, 1, n),
        "lognormal": rng.lognormal(3, 1, n),
        "ties": rng.integers(0, 12, n).astype(float),  # ranks fall inside runs of equal values
        "half_constant": np.where(rng.random(n) < 0.5, 5.0, rng.normal(5, 1, n)),
    }


@pytest.mark.parametrize("qs", [DECILES, np.array([0.25, 0.5, 0.75]), np.linspace(0, 1, 21)[1:-1]])
def test_quantiles_equal_numpy_bit_for_bit(qs):
    for name, x in columns(300_000).items():
        assert np.array_equal(quantiles(x, qs), np.quantile(x, qs)), name


def test_a_bracket_that_misses_its_ranks_falls_back_to_numpy(monkeypatch):
    x = columns(300_000)["normal"]
    monkeypatch.setattr(drift, "QUANTILE_Z", 0.0)  # brackets too narrow to hold the ranks
    monkeypatch.setattr(drift, "QUANTILE_SAMPLE", 50)
    assert np.array_equal(quantiles(x, DECILES), np.quantile(x, DECILES))


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(3)
    n = 3000

    def frame(shift: float) -> pd.DataFrame:
        x = rng.normal(shift, 1, n)
        x[rng.random(n) < 0.05] = np.nan
        with_nulls = pd.array(rng.integers(0, 50, n), dtype="Int64")
        with_nulls[rng.random(n) < 0.1] = pd.NA
        city = rng.choice(["a", "b", "c", None], n, p=[0.5, 0.3, 0.15, 0.05])
        return pd.DataFrame(
            {
                "x": x,
                "count": rng.integers(0, 30 + int(10 * shift), n),  # int64, no nulls
                "with_nulls": with_nulls,
                "small": rng.normal(0, 1, n).astype(np.float32),
                "city": city,
                "flag": rng.random(n) < 0.3 + 0.2 * shift,
                "kind": pd.Categorical(rng.choice(["p", "q"], n)),
            }
        )

    ref, cur = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    frame(0.0).to_parquet(ref, row_group_size=700)  # several row groups: chunked columns
    frame(0.5).to_parquet(cur)
    return str(ref), str(cur)


@pytest.mark.parametrize("method", ["quantile", "evidently"])
def test_column_tables_give_the_same_result_as_pandas_tables(tables, method):
    ref, cur = tables
    lazy = (read_columns(ref), read_columns(cur))
    assert isinstance(lazy[0], ParquetColumns) and len(lazy[0]) == 3000
    expected = compare_tables(read_table(ref), read_table(cur), method=method).to_dict()
    assert compare_tables(*lazy, method=method).to_dict() == expected
    assert set(expected["features"]) == {
        "x",
        "count",
        "with_nulls",
        "small",
        "city",
        "flag",
        "kind",
    }


def test_the_cli_on_parquet_reads_no_pandas_for_numeric_columns(tmp_path):
    rng = np.random.default_rng(1)
    ref, cur = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.integers(0, 9, 5000)}).to_parquet(ref)
    pd.DataFrame({"a": rng.normal(1, 1, 5000), "b": rng.integers(0, 9, 5000)}).to_parquet(cur)
    code = (
        "import sys\n"
        "from retrainer.cli import app\n"
        "try:\n"
        f"    app(['drift', '-r', {str(ref)!r}, '-c', {str(cur)!r}, '--json'])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'pandas' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "exit 3 False", proc.stderr[-2000:]
    assert '"verdict": "retrain"' in proc.stdout


def test_a_corrupt_parquet_file_is_a_message_not_a_traceback(tmp_path, tables):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match="cannot be read as parquet"):
        read_columns(str(bad))
    result = runner.invoke(app, ["drift", "-r", str(bad), "-c", tables[1]])
    assert result.exit_code == 1 and "cannot be read as parquet" in result.output
    assert "Traceback" not in result.output


def test_dates_and_times_are_the_same_categories_from_parquet_and_from_csv(tmp_path):
    rng = np.random.default_rng(3)
    days = pd.date_range("2024-01-01", periods=30, freq="D")
    df = pd.DataFrame(
        {
            "day": pd.Series(rng.choice(days, 600)).where(rng.random(600) > 0.1),  # nulls too
            "hour": pd.date_range("2024-01-01", periods=600, freq="h").tz_localize("UTC"),
            "wait": pd.to_timedelta(rng.integers(0, 5, 600), unit="h"),
            # midnights and one other time: pandas' CSV then writes 00:00:00 out for every row
            "mixed": pd.Series(rng.choice(days, 600)).where(
                np.arange(600) != 5, days[0] + pd.Timedelta("8h30min")
            ),
            "fraction": pd.Series(rng.choice(days, 600)) + pd.Timedelta("500ms"),
            "plan": rng.choice(["a", "b"], 600),
        }
    )
    df.to_parquet(tmp_path / "t.parquet")
    df.to_csv(tmp_path / "t.csv", index=False)
    for ref, cur in [("t.parquet", "t.csv"), ("t.csv", "t.parquet")]:
        result = compare_tables(read_columns(str(tmp_path / ref)), read_table(str(tmp_path / cur)))
        assert {name: f.psi for name, f in result.features.items()} == {
            "day": 0.0,
            "hour": 0.0,
            "wait": 0.0,
            "mixed": 0.0,
            "fraction": 0.0,
            "plan": 0.0,
        }, (ref, cur)
        assert not result.features["day"].unseen and result.features["day"].null_share_current > 0


def test_a_stored_profile_and_json_traffic_spell_the_same_dates_alike():
    """A profile stored with timestamps spelt out (`2024-01-01 00:00:00`) against traffic that
    sends dates alone or ISO 8601 with `T`: the same categories, not every value unseen."""
    from retrainer.core.drift import build_profile, compare_to_profile

    days = [f"2024-01-0{d} 00:00:00" for d in range(1, 6)] + ["2024-01-06 08:30:00"]
    profile = build_profile(pd.DataFrame({"day": days * 50}), [], ["day"])
    sent = [d[:10] for d in days[:5]] + ["2024-01-06T08:30:00"]
    result = compare_to_profile(profile, pd.DataFrame({"day": sent * 50}))
    assert result.features["day"].psi == 0.0 and not result.features["day"].unseen
