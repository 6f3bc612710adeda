"""llmroute contracts: what the operator and the sidecar share, and nothing else.

- ``llmroute_proto.v1``: the protobuf wire contract (``RouterConfig``, config discovery, usage,
  allowance leases, the app-facing ``Router`` service). Generated code, never edited by hand.
- ``llmroute_proto.api``: typed models of the ``llmroute.io/v1alpha1`` custom resources, the
  resource contract that the CRDs in ``crds/`` are checked against.
"""
