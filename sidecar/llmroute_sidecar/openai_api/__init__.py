"""The OpenAI-compatible surface the app sees: request validation (``validate.py``) and the error
objects (``errors.py``) the HTTP front answers with."""
