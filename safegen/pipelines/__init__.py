"""Safe generation pipelines: one module a pipeline."""
