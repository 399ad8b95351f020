// Package client is the Go client of the hub's API: the Connect service
// clients with authentication, fail-over between hub nodes, and blob upload
// and download with progress, digest verification and resume. The CLI is
// built on it; tools that talk to a hub can be too.
package client
