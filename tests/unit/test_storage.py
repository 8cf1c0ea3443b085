import pandas as pd
import pytest

from retrainer.errors import DataError
from retrainer.stores import storage


def frame(n=4, start=0):
    return pd.DataFrame(
        {"x": range(start, start + n), "y": [0.5 * i for i in range(n)], "c": list("abab")[:n]}
    )


def test_csv_and_parquet_round_trip(tmp_path):
    for name in ("t.csv", "t.parquet"):
        uri = str(tmp_path / "nested" / name)
        storage.write_table(frame(), uri)
        pd.testing.assert_frame_equal(storage.read_table(uri), frame())
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == ["t.csv", "t.parquet"]


def test_folder_concatenates_batches_in_name_order_and_sees_new_ones(tmp_path):
    storage.write_table(frame(4, 0), str(tmp_path / "b1.csv"))
    storage.write_table(frame(4, 4), str(tmp_path / "sub" / "b2.parquet"))
    (tmp_path / ".hidden.csv").write_text("junk\n")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "notes.txt").write_text("ignored")
    assert list(storage.read_table(str(tmp_path))["x"]) == list(range(8))
    storage.write_table(frame(4, 8), str(tmp_path / "b3.csv"))
    assert len(storage.read_table(str(tmp_path))) == 12


def test_mismatched_columns(tmp_path):
    storage.write_table(frame(), str(tmp_path / "a.csv"))
    storage.write_table(frame().drop(columns="c"), str(tmp_path / "b.csv"))
    with pytest.raises(DataError, match=r"b.csv: its columns differ .*missing \['c'\]"):
        storage.read_table(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty \\(0 bytes\\)"),
        ("blank.csv", b"\n\n", "the file has no columns"),
        ("garbage.parquet", b"this is not parquet", "cannot be read as parquet"),
        ("latin1.csv", "a,b\ncafé,1\n".encode("latin-1"), "not readable as UTF-8"),
        ("data.json", b"{}", "unsupported file type .json"),
    ],
)
def test_unreadable_files_are_clear(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        storage.read_table(str(path))


def test_header_only_csv_is_zero_rows_for_validation_to_report(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("x,y,c\n")
    df = storage.read_table(str(path))
    assert list(df.columns) == ["x", "y", "c"] and len(df) == 0


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        storage.read_table(str(tmp_path / "nope.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .csv or .parquet files"):
        storage.read_table(str(tmp_path / "empty"))


def test_digest_is_about_content_not_layout(tmp_path):
    storage.write_table(frame(), str(tmp_path / "a.csv"))
    storage.write_table(frame(), str(tmp_path / "a.parquet"))
    a = storage.read_table(str(tmp_path / "a.csv"))
    b = storage.read_table(str(tmp_path / "a.parquet"))
    assert storage.table_digest(a) == storage.table_digest(b) == storage.table_digest(frame())
    changed = frame()
    changed.loc[2, "y"] = 99.0
    assert storage.table_digest(changed) != storage.table_digest(frame())


def test_join_and_remove(tmp_path):
    assert storage.join("s3://b/p/", "m", "k.csv") == "s3://b/p/m/k.csv"
    assert storage.join(str(tmp_path), "m", "k.csv") == str(tmp_path / "m" / "k.csv")
    storage.write_bytes(str(tmp_path / "d" / "f.bin"), b"1")
    storage.remove(str(tmp_path / "d"))
    assert not storage.exists(str(tmp_path / "d"))
    storage.remove(str(tmp_path / "d"))


def test_parquet_with_a_column_name_twice_is_a_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([[1, 2], [3, 4], [5, 6]], names=["a", "b", "a"]), path)
    with pytest.raises(DataError, match=r"the columns \['a'\] appear more than once"):
        storage.read_columns(str(path))


def test_a_csv_header_with_a_column_twice_is_a_clear_error(tmp_path):
    """pandas would read the second one as a new column, a.1: a listed feature would silently
    lose its second copy, an inferred one would gain a feature."""
    path = tmp_path / "dup.csv"
    path.write_text("a,a,b\n1,2,3\n")
    with pytest.raises(DataError, match=r"the columns \['a'\] appear more than once in the header"):
        storage.read_table(str(path))
    fine = tmp_path / "dots.csv"  # a dot in a name is not a repeat
    fine.write_text("a.1,a,b.2\n1,2,3\n")
    assert list(storage.read_table(str(fine)).columns) == ["a.1", "a", "b.2"]


def test_a_header_only_batch_in_a_folder_keeps_the_other_batches_types(tmp_path):
    folder = tmp_path / "batches"
    folder.mkdir()
    pd.DataFrame({"age": [30, 40], "home": ["rent", "own"]}).to_csv(folder / "a.csv", index=False)
    (folder / "b.csv").write_text("age,home\n")
    df = storage.read_table(str(folder))
    assert len(df) == 2 and str(df["age"].dtype) == "int64"
    only_headers = tmp_path / "empty"
    only_headers.mkdir()
    (only_headers / "a.csv").write_text("age,home\n")
    (only_headers / "b.csv").write_text("age,home\n")
    assert len(storage.read_table(str(only_headers))) == 0


def test_a_column_of_numbers_in_one_batch_and_text_in_another_is_refused(tmp_path):
    """Concatenated, floats and strings in one column passed validation and then failed the
    snapshot's Parquet write with a pyarrow traceback."""
    folder = tmp_path / "batches"
    folder.mkdir()
    pd.DataFrame({"job": [1, 2], "y": [0, 1]}).to_csv(folder / "2024-01.csv", index=False)
    pd.DataFrame({"job": ["fixed", "x"], "y": [1, 0]}).to_csv(folder / "2024-02.csv", index=False)
    with pytest.raises(DataError) as exc:
        storage.read_table(str(folder))
    message = str(exc.value)
    assert "column 'job' holds different kinds of value across the batches" in message
    assert "2024-01.csv" in message and "2024-02.csv" in message
    # true/false with a missing value (object-typed) is still true/false
    pd.DataFrame({"job": [True, False], "y": [0, 1]}).to_csv(folder / "2024-01.csv", index=False)
    pd.DataFrame({"job": [True, None], "y": [1, 0]}).to_csv(folder / "2024-02.csv", index=False)
    assert len(storage.read_table(str(folder))) == 4
    # a column all missing in one batch is any kind
    pd.DataFrame({"job": [1, 2], "y": [0, 1]}).to_csv(folder / "2024-01.csv", index=False)
    pd.DataFrame({"job": [None, None], "y": [0, 1]}).to_csv(folder / "2024-02.csv", index=False)
    assert len(storage.read_table(str(folder))) == 4


@pytest.mark.parametrize(
    ("uri", "root", "inside"),
    [
        ("/data/fraud/batches/b.csv", "/data/fraud/batches", True),
        ("/data/fraud/batches", "/data/fraud/batches", True),
        ("/data/fraud/batches/../../credit/x.csv", "/data/fraud/batches", False),
        ("/data/fraud/batches2/x.csv", "/data/fraud/batches", False),
        ("/data/fraud/other.csv", "/data/fraud/base.csv", True),  # a file's root: its folder
        ("/etc/passwd", "/data/fraud/batches", False),
        ("s3://bk/fraud/b.csv", "s3://bk/fraud", True),
        ("s3://bk/fraudulent/b.csv", "s3://bk/fraud", False),
        ("s3://bk/fraud/../credit/b.csv", "s3://bk/fraud/", False),
        ("/data/fraud/b.csv", "s3://bk/fraud", False),
        ("s3://bk/fraud/b.csv", "/data/fraud", False),
    ],
)
def test_within_keeps_a_path_inside_its_root(uri, root, inside):
    assert storage.within(uri, root) is inside


def test_within_follows_links_out(tmp_path):
    root, other = tmp_path / "fraud", tmp_path / "credit"
    root.mkdir()
    other.mkdir()
    (other / "x.csv").write_text("a\n1\n")
    (root / "link.csv").symlink_to(other / "x.csv")
    assert not storage.within(str(root / "link.csv"), str(root))
