package client

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
)

// BaseURL turns "host:port" into "http://host:port"; a URL with a scheme is
// returned without its trailing slash.
func BaseURL(addr string) string {
	addr = strings.TrimRight(strings.TrimSpace(addr), "/")
	if strings.Contains(addr, "://") {
		return addr
	}
	return "http://" + addr
}

// Bearer returns a client interceptor that sends "Authorization: Bearer
// <token()>" with every call. A token of "" sends nothing.
func Bearer(token func() string) connect.ClientInterceptor {
	return func(next connect.ClientFunc) connect.ClientFunc {
		return func(ctx context.Context, spec connect.Spec) (connect.ClientStream, error) {
			if info, ok := connect.CallInfoForClientContext(ctx); ok {
				if t := token(); t != "" {
					info.RequestHeader().Set("Authorization", "Bearer "+t)
				}
			}
			return next(ctx, spec)
		}
	}
}

// NewHTTPClient returns an HTTP client for talking to hub nodes: HTTP/2
// without TLS (one connection multiplexes every call to a node), with
// TCP keep-alives and timeouts on connecting, but none on whole requests,
// which may be long blob transfers or streams.
func NewHTTPClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:             p,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0,
		HTTP2: &http.HTTP2Config{
			PingTimeout:     5 * time.Second,
			SendPingTimeout: 10 * time.Second,
		},
	}}
}

// NewBlobHTTPClient returns an HTTP client for bulk blob transfers: plain
// HTTP/1.1, one connection per transfer and large buffers, which moves bulk
// bytes faster than multiplexed HTTP/2 (and lets the server use sendfile).
func NewBlobHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
		DisableCompression:  true,
	}}
}
