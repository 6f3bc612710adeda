"""``make bench-propagation``: apply-to-ACK and the operator's CPU and memory for 1, 100, 1,000 and
5,000 subscribed sidecars, 1,000 routes to Programmed, and hard-budget overshoot with 50 sidecars,
against a real API server and operator (see ``run.py``)."""
