package procserve

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// configureProcess puts the model server in a process group of its own,
// whose id is its pid, so that a stop reaches everything it starts, and
// has the kernel kill it should the agent die first. (Strictly, should the
// thread that started it end; Go only ends a thread whose goroutine locked
// it and returned, which nothing here does.)
func configureProcess(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// terminateGroup asks the process's group to exit.
func terminateGroup(p *os.Process) { signalGroup(p, syscall.SIGTERM) }

// killGroup kills the process's group.
func killGroup(p *os.Process) { signalGroup(p, syscall.SIGKILL) }

// signalGroup signals the group. Its id stays taken while any member is
// left, even once the leader has been waited for, so it reaches nothing
// else; a group that is gone is not an error.
func signalGroup(p *os.Process, sig syscall.Signal) {
	_ = syscall.Kill(-p.Pid, sig)
}

// groupAlive reports whether any process of the group is left, zombies
// aside: where PID 1 does not reap orphans (a container without an init),
// a dead grandchild stays a zombie in the group for good.
func groupAlive(p *os.Process) bool {
	err := syscall.Kill(-p.Pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone since
		}
		// pid (comm) state ppid pgrp ...; comm may hold anything but ')'
		// is last before the fields.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[2] != strconv.Itoa(p.Pid) {
			continue
		}
		if f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}
