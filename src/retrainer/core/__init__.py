"""Pure logic on frames and arrays (no MLflow, Airflow or boto3): training, evaluation, gate, drift, the GX suite."""
