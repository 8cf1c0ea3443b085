"""Task costs as MLflow metrics, and summed back per run."""

import time

from retrainer.steps.cost import PREFIX, measure, run_id_of, summarise


def test_measure_sees_cpu_and_memory_spent_in_the_step():
    started, cpu = time.time(), time.process_time()
    blob = bytearray(30 * 1024 * 1024)  # touch 30 MB
    for i in range(0, len(blob), 4096):
        blob[i] = 1
    while time.process_time() - cpu < 0.05:
        pass
    cost = measure("train_candidate", started, cpu)
    assert cost.cpu_s >= 0.05 and cost.wall_s >= cost.cpu_s * 0.5
    assert cost.peak_mb > 30 and cost.startup_s >= 0
    metrics = cost.metrics()
    assert set(metrics) == {
        f"{PREFIX}train_candidate.{f}" for f in ("wall_s", "cpu_s", "peak_mb", "startup_s")
    }


def test_summarise_adds_up_tasks_and_keeps_the_data_size():
    metrics = {
        "cost.validate_data.wall_s": 2.0,
        "cost.validate_data.cpu_s": 1.5,
        "cost.validate_data.peak_mb": 300.0,
        "cost.train_candidate.wall_s": 8.0,
        "cost.train_candidate.cpu_s": 7.0,
        "cost.train_candidate.peak_mb": 500.0,
        "data.rows": 4000.0,
        "data.bytes": 1e6,
        "test_roc_auc": 0.8,
    }
    s = summarise(metrics)
    assert s is not None
    assert (s.wall_s, s.cpu_s, s.peak_mb) == (10.0, 8.5, 500.0)
    assert list(s.tasks) == ["train_candidate", "validate_data"]
    assert s.rows == 4000 and s.data_bytes == 1_000_000
    assert summarise({"test_roc_auc": 0.8}) is None


def test_the_run_id_comes_from_the_result_or_the_input():
    assert run_id_of({"mlflow_run_id": "a"}, ({"mlflow_run_id": "b"},)) == "a"
    assert run_id_of(None, ("spec", {"mlflow_run_id": "b"})) == "b"
    assert run_id_of({"version": "3"}, ()) is None
