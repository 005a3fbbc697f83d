"""`lantern`: the user-facing package name. `from lantern.client import Client` (service/client.py);
the service itself lives in `service/`, `workers/` and `schemas/`."""
