"""Production deployment: Kubernetes manifests rendered from `Settings` (render.py), their
offline validation (validate.py), monitoring (monitoring.py) and the `freshlabel deploy` CLI."""
