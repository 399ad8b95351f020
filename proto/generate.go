// Package proto holds Drover's API, Raft log and runner plugin protocol as
// protobuf, and the Go code generated from them under gen/. Generated code
// is committed, so a plain build needs neither protoc nor buf.
//
// Regenerate after editing a .proto file (needs buf on PATH):
//
//	go generate ./proto
package proto

//go:generate buf generate --exclude-path drover/runner
//go:generate buf generate --template buf.gen.runner.yaml --path drover/runner
