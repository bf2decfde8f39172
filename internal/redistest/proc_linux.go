package redistest

import "syscall"

// sysProcAttr makes the kernel kill a server when the test binary dies
// without running its cleanups (e.g. on a test timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
