"""Ray Serve retrieval service: HTTP ensemble retrieval (MER) over a managed, persistent gallery.

Modules: :mod:`~tvifm.serve.config` (``ServeConfig``), :mod:`~tvifm.models.source` (run directory or
MLflow registry), :mod:`~tvifm.serve.encoder` (query/gallery embeddings), :mod:`~tvifm.serve.gallery`
(exact search, persisted segment log), :mod:`~tvifm.serve.api` (FastAPI routes), :mod:`~tvifm.serve.edge`
(body timeouts, upload bounds, JSON errors), :mod:`~tvifm.serve.
deployments` (the Serve deployments) and :mod:`~tvifm.serve.app` (builders: ``tvifm.serve.app:build_app``).
Importing this package imports neither Ray nor MLflow.
"""
