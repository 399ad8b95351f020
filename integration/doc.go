// Package integration holds the tests that run Drover as real processes:
// the drover binary is built once per test run, and hubs (and, later,
// agents) are started on 127.0.0.1 ports, killed with SIGKILL, restarted on
// their data directories, and checked through the public API. A failing
// test prints the tail of every process's log.
package integration
