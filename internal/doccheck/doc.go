// Package doccheck holds no code: its test fails the build when a package
// has no package comment, or when an exported name has no doc comment, so
// that the next engineer always finds one. Generated code (the protobuf
// packages) is exempt; its documentation is in the .proto files.
package doccheck
