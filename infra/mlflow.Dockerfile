# syntax=docker/dockerfile:1
# The MLflow tracking server of k8s/40-mlflow.yaml: mlflow at the version the project uses with its
# basic-auth app (the [auth] extra), the PostgreSQL driver (backend and auth stores) and boto3
# (artifacts in S3-compatible storage). Needs no build context:
#
#   docker build -f infra/mlflow.Dockerfile -t REGISTRY/tvifm/mlflow:3.17.2 infra/
#
# Runs as the non-root user mlflow (uid 10001) and needs only /tmp writable.
FROM python:3.11-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary>=2.9,<3" "boto3>=1.34,<2" \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/mlflow mlflow

USER 10001
WORKDIR /home/mlflow
ENV PYTHONUNBUFFERED=1
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
