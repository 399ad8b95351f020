package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/droverhq/drover/internal/freeport"
)

// stopGrace is how long a child may take to stop after SIGTERM before it
// is killed.
const stopGrace = 5 * time.Second

// child is one drover process the demo started: the hub or an agent.
type child struct {
	name    string
	args    []string
	logPath string

	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
	mu   sync.Mutex
	err  error // what Wait returned
}

// start runs the binary with the child's arguments, its output appended
// to its log file. The child gets the demo's environment without any
// DROVER_* variable, so that settings meant for a real cluster (a config
// file, a data directory, labels) cannot leak into the demo's.
func (c *child) start(bin string) error {
	log, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "----- %s: %s %s\n", time.Now().Format(time.RFC3339), filepath.Base(bin), strings.Join(redacted(c.args), " "))
	cmd := exec.Command(bin, c.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = cleanEnv(os.Environ())
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", c.name, err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func() {
		err := cmd.Wait()
		log.Close()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	}()
	return nil
}

// redacted returns args with the value of --join-token hidden, for the
// log (which a failure prints).
func redacted(args []string) []string {
	out := slices.Clone(args)
	for i := range out {
		if out[i] == "--join-token" && i+1 < len(out) {
			out[i+1] = "(hidden)"
		}
	}
	return out
}

// cleanEnv drops the DROVER_* variables from env.
func cleanEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DROVER_") {
			out = append(out, kv)
		}
	}
	return out
}

// pid is the child's process id, 0 before it started.
func (c *child) pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// exited reports whether the child has exited, and how.
func (c *child) exited() (bool, error) {
	if c.done == nil {
		return false, nil
	}
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return true, c.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM and, if the child is still there after grace,
// SIGKILL; it returns once the child has exited.
func (c *child) stop(grace time.Duration) {
	if c.done == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(grace):
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}

// tail returns the last n lines of the child's log.
func (c *child) tail(n int) []string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append(lines[:0:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// Cluster is the hub and agents the demo runs, as child processes.
type Cluster struct {
	// Dir holds the children's data directories and logs.
	Dir string
	// HubAddr is the hub's HTTP address, Token its admin token.
	HubAddr string
	Token   string
	// Hub and Agents are the processes.
	Hub    Process
	Agents []Process

	children []*child
	stopOnce sync.Once
}

// Process is one child process of the demo.
type Process struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Addr is where it serves: the hub's API, an agent's predictions.
	Addr string `json:"addr"`
	Log  string `json:"log"`
	// GPUs is an agent's (simulated) GPU count.
	GPUs int `json:"gpus"`
}

// PIDs returns the process ids of every child.
func (c *Cluster) PIDs() []int {
	var out []int
	for _, ch := range c.children {
		if p := ch.pid(); p != 0 {
			out = append(out, p)
		}
	}
	return out
}

// Stop stops every child: SIGTERM, then SIGKILL to those still running a
// few seconds later. It returns once all have exited; calling it again
// does nothing.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, ch := range c.children {
			wg.Go(func() { ch.stop(stopGrace) })
		}
		wg.Wait()
	})
}

// Wait returns when ctx ends or every child has exited, whichever is
// first.
func (c *Cluster) Wait(ctx context.Context) {
	for _, ch := range c.children {
		if ch.done == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-ch.done:
		}
	}
}

// child returns the child of that name.
func (c *Cluster) child(name string) *child {
	for _, ch := range c.children {
		if ch.name == name {
			return ch
		}
	}
	return nil
}

// checkAlive returns an error naming the first child that exited.
func (c *Cluster) checkAlive() error {
	for _, ch := range c.children {
		if gone, err := ch.exited(); gone {
			if err == nil {
				err = errors.New("exit status 0")
			}
			return &childExit{name: ch.name, err: err}
		}
	}
	return nil
}

// childExit is a child that exited while the demo needed it.
type childExit struct {
	name string
	err  error
}

func (e *childExit) Error() string { return fmt.Sprintf("%s exited unexpectedly: %v", e.name, e.err) }

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) { return freeport.Loopback() }

// httpOK reports whether GET url answers 200.
func httpOK(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
