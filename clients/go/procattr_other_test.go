//go:build !linux

package fencelock

import "os/exec"

// dieWithParent: only Linux has a parent-death signal; elsewhere TestMain's cleanup
// stops what the tests started.
func dieWithParent(*exec.Cmd) {}
