package sdk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/droverhq/drover/internal/logging"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// LaunchConfig says which plugin binary to start and how. It is the
// agent's side of the SDK; a plugin's own tests may use it too.
type LaunchConfig struct {
	// Path is the plugin executable.
	Path string
	// SHA256 is the hex SHA-256 the binary must have; go-plugin checks it
	// before running the binary and refuses one that differs.
	SHA256 string
	// Env is added to the plugin's environment.
	Env []string
	// Logger receives what the plugin logs: records it logs with Logger
	// (or slog, or the log package) at their level, and lines it writes to
	// standard output or error at info, with "plugin" set to Path.
	Logger *slog.Logger
}

// Client is the agent's handle on a running plugin. Its methods are safe
// for concurrent use. When the plugin process dies, calls fail with
// gRPC's Unavailable and Exited reports true; Launch a new one.
type Client struct {
	pc   *plugin.Client
	rpc  runnerv1.RunnerServiceClient
	desc *runnerv1.DescribeResponse
}

// Launch verifies and starts a plugin binary, completes the handshake and
// asks the runner to describe itself.
func Launch(ctx context.Context, cfg LaunchConfig) (*Client, error) {
	sum, err := hex.DecodeString(cfg.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin %s: checksum %q is not a hex SHA-256", cfg.Path, cfg.SHA256)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = logging.Discard()
	}
	logger = logger.With("plugin", cfg.Path)
	said := &tail{}
	cmd := exec.Command(cfg.Path)
	// The agent's environment, then cfg.Env over it; go-plugin adds its own
	// variables last (SkipHostEnv keeps it from appending the agent's
	// environment again, over ours).
	cmd.Env = append(os.Environ(), cfg.Env...)
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          plugin.PluginSet{pluginName: &grpcPlugin{}},
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SecureConfig:     &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		Logger:           pluginLog{Logger: logging.HCLog(logger, "plugin"), binary: filepath.Base(cfg.Path), tail: said},
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))},
		SyncStdout: &lineLogger{l: logger, stream: "stdout"},
		SyncStderr: &lineLogger{l: logger, stream: "stderr"},
	})
	rpcClient, err := pc.Client()
	if err != nil {
		pc.Kill()
		if strings.Contains(err.Error(), "incompatible API version") {
			return nil, fmt.Errorf("plugin %s was built for another runner protocol than this agent's (version %d); rebuild it against this SDK: %w", cfg.Path, ProtocolVersion, err)
		}
		if pc.Exited() {
			// go-plugin's own words guess at the architecture; what the
			// plugin wrote says why.
			if last := said.String(); last != "" {
				return nil, fmt.Errorf("plugin %s exited before it served; it said:\n%s", cfg.Path, last)
			}
			return nil, fmt.Errorf("plugin %s exited before it served, saying nothing on standard error: %w", cfg.Path, err)
		}
		return nil, fmt.Errorf("plugin %s: %w", cfg.Path, err)
	}
	raw, err := rpcClient.Dispense(pluginName)
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("plugin %s: %w", cfg.Path, err)
	}
	c := &Client{pc: pc, rpc: raw.(runnerv1.RunnerServiceClient)}
	if c.desc, err = c.rpc.Describe(ctx, &runnerv1.DescribeRequest{}); err != nil {
		pc.Kill()
		return nil, fmt.Errorf("plugin %s: describe: %w", cfg.Path, err)
	}
	return c, nil
}

// Describe returns what the runner said of itself at launch.
func (c *Client) Describe() *runnerv1.DescribeResponse { return c.desc }

// Ping asks the runner to describe itself again: it fails when the
// plugin does not answer within ctx.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.rpc.Describe(ctx, &runnerv1.DescribeRequest{})
	return err
}

// Load loads an artifact in the plugin.
func (c *Client) Load(ctx context.Context, req *runnerv1.LoadRequest) (*runnerv1.LoadResponse, error) {
	return c.rpc.Load(ctx, req)
}

// Predict sends a batch to the plugin.
func (c *Client) Predict(ctx context.Context, req *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error) {
	return c.rpc.Predict(ctx, req)
}

// Unload frees a model in the plugin.
func (c *Client) Unload(ctx context.Context, id string) error {
	_, err := c.rpc.Unload(ctx, &runnerv1.UnloadRequest{Id: id})
	return err
}

// Train runs a training job in the plugin, handing each event to fn.
func (c *Client) Train(ctx context.Context, req *runnerv1.TrainRequest, fn func(*runnerv1.TrainResponse) error) error {
	stream, err := c.rpc.Train(ctx, req)
	if err != nil {
		return err
	}
	return recvAll(stream, fn)
}

// Exited reports whether the plugin process has exited.
func (c *Client) Exited() bool { return c.pc.Exited() }

// Pid returns the plugin process's id, or 0.
func (c *Client) Pid() int {
	if rc := c.pc.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Close stops the plugin: gracefully, then killed.
func (c *Client) Close() { c.pc.Kill() }

// Kill stops the plugin at once, without asking it first: for a plugin
// that no longer answers (asking a stopped or wedged process to shut down
// would wait on it forever).
func (c *Client) Kill() {
	if pid := c.Pid(); pid > 0 {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	c.pc.Kill()
}

// FileSHA256 returns the hex SHA-256 of a file: what LaunchConfig.SHA256
// wants for a plugin binary.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
