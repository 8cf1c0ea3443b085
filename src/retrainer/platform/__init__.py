"""Drives the rest: the services each profile starts, the Airflow REST client, migrate, simulate."""
