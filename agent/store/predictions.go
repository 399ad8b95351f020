package store

import (
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Logged predictions, kept by model and request id for feedback to find:
// each expires after the retention given when it was put, so that labels
// arriving later than that are counted as late, and the store stays
// bounded.
var predPrefix = []byte("p/")

func predKey(model, id string) []byte {
	k := append(append([]byte(nil), predPrefix...), model...)
	return append(append(k, 0), id...)
}

// PutPredictions stores logged predictions, by model and request id, each
// for ttl, in one synced transaction.
func (s *Store) PutPredictions(model string, byID map[string][]byte, ttl time.Duration) error {
	if err := s.space.check(); err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for id, v := range byID {
		if err := wb.SetEntry(badger.NewEntry(predKey(model, id), v).WithTTL(ttl)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// Prediction returns a logged prediction, or ErrNotFound when there is
// none (never logged, expired, or deleted).
func (s *Store) Prediction(model, id string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(predKey(model, id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	return out, err
}

// DeletePredictions deletes logged predictions, so that a second label for
// the same request is told apart from the first, in synced transactions
// (as many as it takes).
func (s *Store) DeletePredictions(model string, ids []string) error {
	if err := s.space.check(); err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, id := range ids {
		if err := wb.Delete(predKey(model, id)); err != nil {
			return err
		}
	}
	return wb.Flush()
}
