package fsm

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/hub/state"
	"github.com/droverhq/drover/internal/digest"
	fsmv1 "github.com/droverhq/drover/proto/gen/drover/fsm/v1"
)

// snapshotFormat is written in every snapshot's header. Restore refuses a
// snapshot of a newer format.
const snapshotFormat = 1

// headerRecord is the kind byte of the header; state's record kinds start at 1.
const headerRecord state.RecordKind = 0

// Snapshot captures the state as it is now. It is cheap: the state is
// immutable and the I/O happens in Persist.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{view: f.State().Snapshot()}, nil
}

type snapshot struct {
	view *state.Snapshot
}

// Persist writes the header and every record: a kind byte, then the
// record, length-delimited.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

// WriteTo writes the snapshot to w; Persist is WriteTo on a Raft sink.
func (s *snapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	put := func(kind state.RecordKind, msg proto.Message) error {
		if err := bw.WriteByte(byte(kind)); err != nil {
			return err
		}
		_, err := protodelim.MarshalOptions{MarshalOptions: proto.MarshalOptions{Deterministic: true}}.MarshalTo(bw, msg)
		return err
	}
	if err := put(headerRecord, &fsmv1.SnapshotHeader{Format: snapshotFormat, Index: s.view.Index()}); err != nil {
		return err
	}
	if err := s.view.Records(put); err != nil {
		return err
	}
	return bw.Flush()
}

// Release does nothing: the view holds no resources.
func (s *snapshot) Release() {}

// Restore replaces the state with a snapshot's. The new state is built
// apart and swapped in whole; on error the old state stays.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	next, index, err := ReadSnapshot(rc)
	if err != nil {
		return err
	}
	old := f.store.Swap(next)
	old.Abandon()
	f.notify(index)
	f.logger.Info("restored state from snapshot", "index", index)
	return nil
}

// ReadSnapshot builds a new store from a snapshot written by Persist and
// returns it with the index it was taken at.
func ReadSnapshot(r io.Reader) (*state.Store, uint64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	kind, err := br.ReadByte()
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: read snapshot header: %w", err)
	}
	var header fsmv1.SnapshotHeader
	if state.RecordKind(kind) != headerRecord {
		return nil, 0, fmt.Errorf("fsm: snapshot starts with record kind %d, not a header", kind)
	}
	if err := protodelim.UnmarshalFrom(br, &header); err != nil {
		return nil, 0, fmt.Errorf("fsm: read snapshot header: %w", err)
	}
	if header.GetFormat() > snapshotFormat {
		return nil, 0, fmt.Errorf("fsm: snapshot format %d is newer than this version reads (%d)", header.GetFormat(), snapshotFormat)
	}
	store := state.New()
	restore := store.Restorer()
	defer restore.Abort()
	opts := protodelim.UnmarshalOptions{MaxSize: -1}
	for {
		kind, err := br.ReadByte()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("fsm: read snapshot: %w", err)
		}
		msg, err := state.NewRecord(state.RecordKind(kind))
		if err != nil {
			return nil, 0, fmt.Errorf("fsm: read snapshot: %w", err)
		}
		if err := opts.UnmarshalFrom(br, msg); err != nil {
			return nil, 0, fmt.Errorf("fsm: read snapshot record of kind %d: %w", kind, err)
		}
		if err := restore.Add(state.RecordKind(kind), msg); err != nil {
			return nil, 0, fmt.Errorf("fsm: restore record of kind %d: %w", kind, err)
		}
	}
	if err := restore.Commit(header.GetIndex()); err != nil {
		return nil, 0, err
	}
	return store, header.GetIndex(), nil
}

// Digest returns the SHA-256 of the whole state as a snapshot would write
// it, and the index it was taken at. Two replicas at the same index have
// the same digest, or they have diverged.
func (f *FSM) Digest() (uint64, digest.Digest, error) {
	s := &snapshot{view: f.State().Snapshot()}
	v := digest.NewVerifier()
	if err := s.write(v); err != nil {
		return 0, digest.Digest{}, err
	}
	return s.view.Index(), v.Digest(), nil
}
