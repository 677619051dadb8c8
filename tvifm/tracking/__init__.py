"""MLflow at the edge: a local tracking server, run logging from rank 0, the model registry and the
``tvifm`` pyfunc model. Nothing outside the engine driver, jobs and serving imports this package."""
