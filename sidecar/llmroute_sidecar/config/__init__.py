"""The sidecar's configuration: validated snapshots (``snapshot.py``), the atomic store
(``store.py``), standalone YAML loading (``standalone.py``) and secret redaction (``redact.py``)."""
