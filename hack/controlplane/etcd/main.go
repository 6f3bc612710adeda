// Command etcd is the upstream etcd server, built from the Go module proxy for
// llmroute's local test control plane. Built by
// operator/llmroute_operator/devcluster/binaries.py. It lives in its own module
// so that its version does not move the apiserver's etcd client.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
