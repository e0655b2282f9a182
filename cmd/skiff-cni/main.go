// Command skiff-cni is Skiff's CNI plugin (see cni/plugin and docs/cni.md).
// The agent installs it, and a copy named loopback, into containerd's CNI
// bin directory.
package main

import "github.com/skiffnet/skiff/cni/plugin"

var version = "dev"

func main() {
	plugin.Main("skiff-cni " + version + ": routed L3 pod networking for Skiff")
}
