package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
)

// copyBuffers and copyBufferSize shape Copy's pipeline.
const (
	copyBuffers    = 4
	copyBufferSize = 1 << 20
)

// Copy copies src to dst and returns the digest of what was copied. It
// hashes one buffer while writing it and reading the next, on another
// goroutine: SHA-256 runs at about the speed of a memory copy, so doing the
// two one after the other would halve the throughput of every transfer that
// verifies as it goes.
func Copy(dst io.Writer, src io.Reader) (Digest, int64, error) {
	h := sha256.New()
	free := make(chan []byte, copyBuffers)
	for range copyBuffers {
		free <- make([]byte, copyBufferSize)
	}
	toHash := make(chan []byte, copyBuffers)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range toHash {
			h.Write(b)
			free <- b[:cap(b)]
		}
	}()
	finish := func() {
		close(toHash)
		<-hashed
	}
	var total int64
	for {
		buf := <-free
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			// The hasher and the writer only read the buffer; it goes back
			// to the free list once hashed, and is not refilled before the
			// write below returns.
			toHash <- buf[:n]
			if _, werr := dst.Write(buf[:n]); werr != nil {
				finish()
				return Digest{}, total, werr
			}
			total += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			finish()
			return Digest{}, total, rerr
		}
	}
	finish()
	return Digest{hex: hex.EncodeToString(h.Sum(nil))}, total, nil
}
