"""AWS wire protocols the sidecar speaks without botocore: SigV4 signing and event-stream framing.

Small, dependency-free modules (hashlib, hmac, zlib) shared by the Bedrock adapter
(``adapters/bedrock.py``) and the fake Bedrock (``llmroute_fakes/bedrock_api.py``), so the fake checks
the sidecar with the same code paths AWS documents, and botocore stays out of the sidecar.
This package only names its modules; import ``sigv4`` and ``eventstream`` directly.
"""
