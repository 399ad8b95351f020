package client

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// Environment variables the CLI and Config read.
const (
	// EnvAddr lists hub addresses, comma-separated: "10.0.0.1:8420,10.0.0.2:8420".
	EnvAddr = "DROVER_ADDR"
	// EnvToken is the API token.
	EnvToken = "DROVER_TOKEN"
)

// DefaultAddr is the hub address used when none is given.
const DefaultAddr = "127.0.0.1:8420"

// maxMessageBytes matches the hub's limit on one message.
const maxMessageBytes = 16 << 20

// compressMinBytes is the smallest message worth gzipping.
const compressMinBytes = 8 << 10

// DefaultBlobIdleTimeout is Config.BlobIdleTimeout's default.
const DefaultBlobIdleTimeout = time.Minute

// Config says how to reach the hub.
type Config struct {
	// Addrs are hub node addresses ("host:port" or URLs). Calls go to one
	// and fail over to the others (see failover).
	Addrs []string
	// Token is the API token sent with every call.
	Token string
	// HTTPClient is used for API calls; nil means NewHTTPClient().
	HTTPClient *http.Client
	// BlobHTTPClient is used for blob uploads and downloads; nil means
	// NewBlobHTTPClient().
	BlobHTTPClient *http.Client
	// BlobIdleTimeout is how long a download may wait for the hub to
	// answer or to send more bytes before it gives up on that node
	// (ErrStalled) and tries the next; what arrived is kept, and the next
	// try resumes from it. Default DefaultBlobIdleTimeout.
	BlobIdleTimeout time.Duration
	// Interceptors run around every call, after authentication is added.
	Interceptors []connect.ClientInterceptor
}

// ConfigFromEnv reads DROVER_ADDR and DROVER_TOKEN.
func ConfigFromEnv() Config {
	var c Config
	for _, a := range strings.Split(os.Getenv(EnvAddr), ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.Addrs = append(c.Addrs, a)
		}
	}
	c.Token = os.Getenv(EnvToken)
	return c
}

// Client is a connection to a hub cluster: one client per service, all
// sharing authentication and fail-over.
type Client struct {
	Models   droverv1connect.ModelServiceClient
	Datasets droverv1connect.DatasetServiceClient
	Tokens   droverv1connect.TokenServiceClient
	Audit    droverv1connect.AuditServiceClient
	Cluster  droverv1connect.ClusterServiceClient
	Agents   droverv1connect.AgentServiceClient
	Drift    droverv1connect.DriftServiceClient
	Rollouts droverv1connect.RolloutServiceClient
	Runs     droverv1connect.RunServiceClient
	Retrain  droverv1connect.RetrainServiceClient
	// AgentControl is what agents call.
	AgentControl droverv1connect.AgentControlServiceClient

	cfg   Config
	http  *http.Client
	blobs *failoverBlobs
}

// New returns a client for the hub at cfg.Addrs (DefaultAddr if empty).
func New(cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		cfg.Addrs = []string{DefaultAddr}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = NewHTTPClient()
	}
	if cfg.BlobHTTPClient == nil {
		cfg.BlobHTTPClient = NewBlobHTTPClient()
	}
	if cfg.BlobIdleTimeout <= 0 {
		cfg.BlobIdleTimeout = DefaultBlobIdleTimeout
	}
	fo := &failover{}
	for _, a := range cfg.Addrs {
		if strings.TrimSpace(a) == "" {
			return nil, errors.New("empty hub address")
		}
		fo.transports = append(fo.transports, connecthttp.NewTransport(cfg.HTTPClient, BaseURL(a),
			connecthttp.WithReadMaxBytes(maxMessageBytes), connecthttp.WithSendMaxBytes(maxMessageBytes), connecthttp.WithCompressMinBytes(compressMinBytes)))
	}
	token := cfg.Token
	ics := append([]connect.ClientInterceptor{Bearer(func() string { return token })}, cfg.Interceptors...)
	cc := connect.NewClient(fo, ics...)
	return &Client{
		Models:       droverv1connect.NewModelServiceClient(cc),
		Datasets:     droverv1connect.NewDatasetServiceClient(cc),
		Tokens:       droverv1connect.NewTokenServiceClient(cc),
		Audit:        droverv1connect.NewAuditServiceClient(cc),
		Cluster:      droverv1connect.NewClusterServiceClient(cc),
		Agents:       droverv1connect.NewAgentServiceClient(cc),
		Drift:        droverv1connect.NewDriftServiceClient(cc),
		Rollouts:     droverv1connect.NewRolloutServiceClient(cc),
		Runs:         droverv1connect.NewRunServiceClient(cc),
		Retrain:      droverv1connect.NewRetrainServiceClient(cc),
		AgentControl: droverv1connect.NewAgentControlServiceClient(cc),
		cfg:          cfg,
		http:         cfg.BlobHTTPClient,
		blobs:        &failoverBlobs{addrs: cfg.Addrs},
	}, nil
}
