-- One server, one database per service (docker-compose mounts this into postgres' init folder).
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
