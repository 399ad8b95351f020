//go:build !linux

package demo

import "syscall"

// childAttr puts a child in its own process group, so that a Ctrl-C at
// the terminal reaches the demo alone, which then stops its children.
// (Only Linux can also have the kernel kill a child whose parent died.)
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
