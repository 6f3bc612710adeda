// Command kube-apiserver is the upstream Kubernetes API server, built from the
// Go module proxy for llmroute's local test control plane. Built by
// operator/llmroute_operator/devcluster/binaries.py; the version is stamped
// with -ldflags there.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
