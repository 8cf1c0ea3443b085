"""The monitor steps: what the `<model>_monitor` DAG runs, testable without Airflow.

read_window (window.py) -> measure_drift (measure.py: PSI vs the champion's reference profile,
delayed labels, the decision of decision.py) -> evidently_report (report.py), and the trigger
plan (trigger.py: dedup and cooldown as a plain function) that the Airflow task executes.

Every check is one MLflow run in experiment `retrainer/<model>/monitor` (checks.py): the window
bounds and the decision are tags, the PSI per feature and the drift share are metrics
(timestamped at the window's end, so the MLflow UI charts drift over time), the PSI table, the
decision and the Evidently report are artifacts. The next check's window starts where the last
decided one ended; a window with too few rows is not consumed, so its rows count towards the
next check.
"""
