"""The Airflow adapter: the only package that imports airflow."""
