//go:build !linux

package procserve

import (
	"os"
	"os/exec"
)

// Process groups are only used on Linux, where the agent runs; elsewhere
// (a developer's machine) a stop reaches the model server process alone.

func configureProcess(*exec.Cmd) {}

func terminateGroup(p *os.Process) { _ = p.Signal(os.Interrupt) }

func killGroup(p *os.Process) { _ = p.Kill() }

func groupAlive(*os.Process) bool { return false }
