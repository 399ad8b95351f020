package procserve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// maxLineBytes bounds a line of a model server's output in the log;
	// the rest of a longer line is dropped.
	maxLineBytes = 4096
	// tailLines is how many of its last lines of output a failed start
	// reports.
	tailLines = 20
	// startAttempts bounds the starts of one Load or restart that fail
	// because the port was taken between picking and binding it.
	startAttempts = 3
	// killWait bounds how long kill waits for a killed group to be gone.
	killWait = 5 * time.Second
	// probeTimeout bounds one readiness probe.
	probeTimeout = 2 * time.Second
)

// inheritedEnv are the agent's variables a model server inherits.
var inheritedEnv = []string{"PATH", "HOME", "LANG"}

// process is one run of a model server.
type process struct {
	cmd     *exec.Cmd
	port    int
	baseURL string
	started time.Time
	ready   time.Time // when it first answered ready

	// exited is closed once the process has been waited for; waitErr is
	// its exit status then.
	exited  chan struct{}
	waitErr error
	// logsDone is closed when both output pipes have reached their end:
	// the process and everything it started have closed them.
	logsDone chan struct{}
	tail     *lineTail
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitStatus describes how the process ended; call it after exited.
func (p *process) exitStatus() string {
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// argv returns the command with the placeholders filled in for port.
func (l *launch) argv(command []string, port int) []string {
	r := strings.NewReplacer(
		"{port}", strconv.Itoa(port),
		"{artifact}", l.artifact,
		"{model}", l.id,
		"{name}", l.name,
		"{format}", l.format,
	)
	out := make([]string, len(command))
	for i, a := range command {
		out[i] = r.Replace(a)
	}
	return out
}

// env returns the process's environment: the few variables it inherits,
// the configured ones, then Drover's, which win over both.
func (l *launch) env(extra []string, port int) []string {
	var env []string
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, extra...)
	env = append(env,
		"DROVER_PORT="+strconv.Itoa(port),
		"DROVER_ARTIFACT="+l.artifact,
		"DROVER_MODEL="+l.id,
		"DROVER_MODEL_NAME="+l.name,
		"DROVER_FORMAT="+l.format,
		"DROVER_PARAMS="+l.params,
	)
	if l.schema != "" {
		env = append(env, "DROVER_SCHEMA="+l.schema)
	}
	return env
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the model server binds it; start
// retries then.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	return port, nil
}

// spawn starts the model server on port, in its own process group, with
// its output going to the log.
func (s *Server) spawn(l *launch, port int, logger *slog.Logger) (*process, error) {
	argv := l.argv(s.cfg.Command, port)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.cfg.Dir
	cmd.Env = l.env(s.cfg.Env, port)
	configureProcess(cmd)

	// The pipes are ours, not exec's, so that Wait does not wait for a
	// grandchild that keeps them open: the exit of the process itself is
	// what restarts or completes a stop.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}

	p := &process{
		cmd:      cmd,
		port:     port,
		baseURL:  "http://127.0.0.1:" + strconv.Itoa(port),
		started:  time.Now(),
		exited:   make(chan struct{}),
		logsDone: make(chan struct{}),
		tail:     &lineTail{},
	}
	logger = logger.With("pid", cmd.Process.Pid)
	var wg sync.WaitGroup
	wg.Go(func() { p.copyLines(outR, logger.With("stream", "stdout")) })
	wg.Go(func() { p.copyLines(errR, logger.With("stream", "stderr")) })
	go func() {
		wg.Wait()
		close(p.logsDone)
	}()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	logger.Info("model server started", "port", port, "command", argv)
	return p, nil
}

// copyLines logs every line read from r, and keeps the last ones for
// errors. A line longer than maxLineBytes is cut.
func (p *process) copyLines(r *os.File, logger *slog.Logger) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLineBytes)
	for {
		b, err := br.ReadSlice('\n')
		cut := false
		if errors.Is(err, bufio.ErrBufferFull) {
			line := string(b) // copied before the buffer is reused
			cut = true
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			b = []byte(line)
		}
		if len(b) > 0 {
			line := strings.TrimRight(string(b), "\r\n")
			if cut {
				line += " […]"
			}
			line = strings.ToValidUTF8(line, "\uFFFD")
			p.tail.add(line)
			logger.Info("model server output", "line", line)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				logger.Debug("reading model server output", "err", err)
			}
			return
		}
	}
}

// lineTail keeps the last tailLines lines of a process's output.
type lineTail struct {
	mu    sync.Mutex
	lines []string
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:tailLines-1]
	}
	t.lines = append(t.lines, line)
}

// String returns the lines, each on its own indented line; "(none)" when
// there are none.
func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "(none)"
	}
	return "\n\t" + strings.Join(t.lines, "\n\t")
}

// bindFailed reports whether the output says the port was taken.
func (t *lineTail) bindFailed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines {
		l = strings.ToLower(l)
		if strings.Contains(l, "address already in use") || strings.Contains(l, "eaddrinuse") {
			return true
		}
	}
	return false
}

// errExitedEarly is a process that exited before it answered ready.
var errExitedEarly = errors.New("exited before it was ready")

// start starts the model's server and waits until it answers ready. A
// process that fails to bind its port is started again on another one; one
// that fails otherwise, or is not ready within the ready timeout, is
// killed, and the error quotes its last lines of output.
func (in *instance) start(ctx context.Context) (*process, error) {
	s := in.srv
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := s.spawn(&in.launch, port, in.logger)
		if err != nil {
			return nil, err
		}
		err = s.waitReady(ctx, p)
		if err == nil {
			p.ready = time.Now()
			in.logger.Info("model server ready", "pid", p.cmd.Process.Pid, "port", port,
				"took", time.Since(p.started).Round(time.Millisecond))
			return p, nil
		}
		p.kill()
		p.awaitLogs(time.Second)
		if errors.Is(err, errExitedEarly) && p.tail.bindFailed() && attempt < startAttempts {
			in.logger.Warn("model server could not bind its port; starting it on another", "port", port)
			continue
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("model server not ready: %w", ctx.Err())
		}
		return nil, fmt.Errorf("model server %w; its last output: %s", err, p.tail)
	}
}

// waitReady polls the process's /v2/health/ready until it answers 200, the
// process exits, the ready timeout passes or ctx ends.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	deadline := time.NewTimer(s.cfg.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(s.probeEvery)
	defer tick.Stop()
	for {
		if s.probeReady(ctx, p) {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%w (%s)", errExitedEarly, p.exitStatus())
		case <-deadline.C:
			return fmt.Errorf("was not ready within %v (GET /v2/health/ready on port %d); killed it", s.cfg.ReadyTimeout, p.port)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// probeReady asks the process once whether it is ready.
func (s *Server) probeReady(ctx context.Context, p *process) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.baseURL+"/v2/health/ready", nil)
	if err != nil {
		return false
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// kill kills the process group at once and waits for the process, and
// for up to killWait for the rest of the group to die.
func (p *process) kill() {
	killGroup(p.cmd.Process)
	<-p.exited
	killGroup(p.cmd.Process) // whatever it started and left behind
	// SIGKILL takes effect when a process next runs, which one stuck in
	// the kernel (a GPU driver call) may not do for a while.
	for deadline := time.Now().Add(killWait); groupAlive(p.cmd.Process) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// stop asks the process group to exit (SIGTERM), gives it until timeout
// for the process and everything it started to be gone, then kills
// whatever is left. It returns once the process has been waited for.
func (p *process) stop(timeout time.Duration) {
	if !p.hasExited() {
		terminateGroup(p.cmd.Process)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	exited := p.exited
	for !p.hasExited() || groupAlive(p.cmd.Process) {
		select {
		case <-deadline.C:
			p.kill()
			return
		case <-exited:
			exited = nil // from now on, poll for the rest of the group
		case <-poll.C:
		}
	}
	p.kill()
}

// awaitLogs waits up to d for the process's output to be read to its end.
func (p *process) awaitLogs(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.logsDone:
	case <-t.C:
	}
}
