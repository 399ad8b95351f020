package hub

import (
	"net/http"
	"sync"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	"github.com/droverhq/drover/hub/client"
	"github.com/droverhq/drover/proto/gen/drover/v1/droverv1connect"
)

// peerClients are the clients this node uses to call its peers, one per
// peer address, authenticated with the peer secret.
type peerClients struct {
	http   *http.Client
	secret func() string

	mu     sync.Mutex
	byAddr map[string]droverv1connect.PeerServiceClient
}

func newPeerClients(c *http.Client, secret func() string) *peerClients {
	if c == nil {
		c = client.NewHTTPClient()
	}
	return &peerClients{http: c, secret: secret, byAddr: make(map[string]droverv1connect.PeerServiceClient)}
}

// client returns the PeerService client for a node's HTTP address.
func (p *peerClients) client(addr string) droverv1connect.PeerServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.byAddr[addr]; ok {
		return c
	}
	c := droverv1connect.NewPeerServiceClient(connect.NewClient(
		connecthttp.NewTransport(p.http, client.BaseURL(addr), connecthttp.WithReadMaxBytes(maxMessageBytes), connecthttp.WithSendMaxBytes(maxMessageBytes), connecthttp.WithCompressMinBytes(compressMinBytes)),
		client.Bearer(p.secret),
	))
	p.byAddr[addr] = c
	return c
}

// joinClient returns a PeerService client that authenticates with a token
// rather than the peer secret, for a node that is not a member yet.
func (p *peerClients) joinClient(addr, token string) droverv1connect.PeerServiceClient {
	return droverv1connect.NewPeerServiceClient(connect.NewClient(
		connecthttp.NewTransport(p.http, client.BaseURL(addr)),
		client.Bearer(func() string { return token }),
	))
}
