"""What each Airflow task runs, as plain functions: retrain, deploy, monitor."""
