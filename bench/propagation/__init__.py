"""``make bench-propagation``: apply-to-ACK for 1, 100 and 1,000 subscribed sidecars, and 1,000 routes
to Programmed, against a real API server and operator (see ``run.py``)."""
