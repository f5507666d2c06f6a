"""MLflow I/O: the tracking resource, what a run logs, registered models, the registry's descriptions, failures."""
