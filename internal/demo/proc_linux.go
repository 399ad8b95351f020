package demo

import "syscall"

// childAttr puts a child in its own process group, so that a Ctrl-C at
// the terminal reaches the demo alone, which then stops its children in
// order (and says so), and has the kernel kill the child if the demo dies
// without stopping it (SIGKILL, a crash).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
