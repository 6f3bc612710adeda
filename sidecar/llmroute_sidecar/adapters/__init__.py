"""Provider adapters: translate between the OpenAI shape the app speaks and each provider's wire protocol.

``base.py`` is the contract, ``errors.py`` the shared error taxonomy, one module per protocol, and
``registry.py`` picks the adapter for a backend's provider.
"""
