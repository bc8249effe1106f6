package fencelock

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes cmd receive SIGKILL when the test process dies, so a test binary
// that panics or times out leaves no server or child behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
