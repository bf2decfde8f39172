package pgtest

import "syscall"

// sysProcAttr runs a server process as cred's user (nil: as we are) and has
// the kernel kill it if the test binary dies without cleaning up (e.g. on a
// test timeout). Go sets the death signal after switching users, so it
// survives the switch.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
}
