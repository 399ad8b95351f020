// Package state is the hub's replicated state: every model, version, alias,
// data set, token, node and audit event, held in memory in go-memdb.
//
// Only the Raft state machine (hub/fsm) writes it, through the methods of
// Store, each of which checks its guards and applies one change in one
// transaction together with that change's audit event: a change is applied
// whole or refused whole. The methods are deterministic: the time, actor and
// Raft index of a change arrive in a Change, never from a clock.
//
// Reads go through a Snapshot, an immutable view of one point in the
// history, which costs nothing to take and never blocks a writer.
package state
