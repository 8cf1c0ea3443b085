"""Where things are kept: files and S3, MLflow tracking, the registry and aliases, the promotion ledger."""
