// pause: the sandbox ("pause") container of a test node's containerd, built here because no
// registry serves registry.k8s.io/pause on this machine (tests/cluster/images.sh).
//
// It holds the pod's namespaces open: it blocks until SIGTERM or SIGINT and then exits 0.
// Nothing else: unlike the upstream pause it reaps no children (the test pods do not share
// their PID namespace, so it never has any).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	os.Exit(0)
}
