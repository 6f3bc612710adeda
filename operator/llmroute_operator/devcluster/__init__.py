"""A local Kubernetes control plane (etcd + kube-apiserver) for e2e tests and the demo, without Docker.

Modules, one concern each:

- :mod:`.versions` reads the pinned versions from ``hack/controlplane/versions.env``;
- :mod:`.paths` knows the repository root and the cache directories;
- :mod:`.binaries` finds kube-apiserver, etcd, kubectl and helm, or has :mod:`.gobuild` build them
  from the Go module proxy (``python -m llmroute_operator.devcluster.binaries ensure``);
- :mod:`.pki` makes the CA, certificates and service-account keys with ``cryptography``;
- :mod:`.processes` starts children in their own process groups and makes sure none outlives us;
- :mod:`.kubeconfig` writes the admin kubeconfig; :mod:`.kubectl` runs kubectl against one;
- :mod:`.controlplane` is the :class:`~.controlplane.ControlPlane` that ties these together;
- :mod:`.target` picks the cluster that e2e tests and the demo use (a local plane or an existing one);
- :mod:`.background` keeps a long-lived plane for ``make cluster-up`` / ``make cluster-down``
  (driven by :mod:`.__main__`).

It is development tooling of the operator package: it imports nothing from the operator itself.
"""
