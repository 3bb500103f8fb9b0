// Command etcd is etcd's own server entry point (go.etcd.io/etcd/server/v3/etcdmain)
// built inside this module so that the test cluster needs no downloaded release.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
