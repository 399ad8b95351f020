package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/agent/oip"
	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

// batcher combines the requests for one version served by a runner
// plugin into batches, so that a plugin is not one gRPC round trip per
// request. A request to an idle runner goes at once; those that arrive
// while its in-flight batches are being answered queue and go together as
// the next batch, up to maxRows rows (and, with a max delay, waiting that
// long for more). Requests are combined only when their inputs line up
// (the same names, datatypes and row shapes, in the same order); the
// outputs are split back by rows.
type batcher struct {
	id       string
	send     func(context.Context, *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error)
	maxRows  int
	maxDelay time.Duration

	queue    chan *batchItem
	inflight chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	sent    atomic.Int64 // batches sent
	sentFor atomic.Int64 // requests they answered
}

type batchItem struct {
	inputs []*runnerv1.Tensor
	rows   int
	done   chan batchResult // buffered: the dispatcher never blocks on it
}

type batchResult struct {
	outputs []*runnerv1.Tensor
	err     error
}

// batchTimeout bounds one batch at the runner; a caller that gives up
// sooner stops waiting, but its rows are still answered.
const batchTimeout = time.Minute

func newBatcher(id string, send func(context.Context, *runnerv1.PredictRequest) (*runnerv1.PredictResponse, error), o ServingOptions) *batcher {
	b := &batcher{id: id, send: send, maxRows: o.BatchMaxRows, maxDelay: o.BatchMaxDelay,
		queue:    make(chan *batchItem, 4*o.BatchMaxRows),
		inflight: make(chan struct{}, o.BatchInFlight),
		stop:     make(chan struct{}),
	}
	b.wg.Add(1)
	go b.run()
	return b
}

// predict answers one request's rows as part of a batch.
func (b *batcher) predict(ctx context.Context, inputs []*runnerv1.Tensor, rows int) ([]*runnerv1.Tensor, error) {
	it := &batchItem{inputs: inputs, rows: rows, done: make(chan batchResult, 1)}
	select {
	case b.queue <- it:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.stop:
		return nil, fmt.Errorf("%w: %s is being unloaded", oip.ErrModelNotReady, b.id)
	}
	select {
	case r := <-it.done:
		return r.outputs, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close stops the batcher once what it was given has been answered.
func (b *batcher) close() {
	b.stopOnce.Do(func() { close(b.stop) })
	b.wg.Wait()
}

func (b *batcher) run() {
	defer b.wg.Done()
	var carry *batchItem // taken from the queue but not fitting the last batch
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-b.queue:
			case <-b.stop:
				b.failQueued()
				return
			}
		}
		// Wait for the runner to have room; requests queue meanwhile and
		// join this batch.
		select {
		case b.inflight <- struct{}{}:
		case <-b.stop:
			first.done <- batchResult{err: fmt.Errorf("%w: %s is being unloaded", oip.ErrModelNotReady, b.id)}
			b.failQueued()
			return
		}
		items, rows := []*batchItem{first}, first.rows
		var deadline <-chan time.Time
		var timer *time.Timer
		if b.maxDelay > 0 {
			timer = time.NewTimer(b.maxDelay)
			deadline = timer.C
		}
	collect:
		for rows < b.maxRows {
			var it *batchItem
			select {
			case it = <-b.queue:
			default:
				if deadline == nil {
					break collect
				}
				select {
				case it = <-b.queue:
				case <-deadline:
					break collect
				case <-b.stop:
					break collect
				}
			}
			if rows+it.rows > b.maxRows || !aligned(first.inputs, it.inputs) {
				carry = it
				break
			}
			items, rows = append(items, it), rows+it.rows
		}
		if timer != nil {
			timer.Stop()
		}
		b.wg.Add(1)
		go b.dispatch(items, rows)
	}
}

func (b *batcher) failQueued() {
	for {
		select {
		case it := <-b.queue:
			it.done <- batchResult{err: fmt.Errorf("%w: %s is being unloaded", oip.ErrModelNotReady, b.id)}
		default:
			return
		}
	}
}

// dispatch sends one batch and hands each request its rows of the answer.
func (b *batcher) dispatch(items []*batchItem, rows int) {
	defer b.wg.Done()
	defer func() { <-b.inflight }()
	b.sent.Add(1)
	b.sentFor.Add(int64(len(items)))
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	if len(items) == 1 {
		resp, err := b.send(ctx, &runnerv1.PredictRequest{Id: b.id, Rows: int64(rows), Inputs: items[0].inputs})
		if err == nil {
			err = checkRows(resp.GetOutputs(), rows)
		}
		items[0].done <- batchResult{outputs: resp.GetOutputs(), err: err}
		return
	}
	resp, err := b.send(ctx, &runnerv1.PredictRequest{Id: b.id, Rows: int64(rows), Inputs: concat(items, rows)})
	if re := (*oip.RequestError)(nil); errors.As(err, &re) {
		// The runner refused the batch's input: one request's fault, not
		// every one's. Each goes again alone and gets its own answer.
		for _, it := range items {
			resp, err := b.send(ctx, &runnerv1.PredictRequest{Id: b.id, Rows: int64(it.rows), Inputs: it.inputs})
			if err == nil {
				err = checkRows(resp.GetOutputs(), it.rows)
			}
			it.done <- batchResult{outputs: resp.GetOutputs(), err: err}
		}
		return
	}
	if err == nil {
		err = checkRows(resp.GetOutputs(), rows)
	}
	if err != nil {
		for _, it := range items {
			it.done <- batchResult{err: err}
		}
		return
	}
	outs := resp.GetOutputs()
	off := 0
	for _, it := range items {
		mine := make([]*runnerv1.Tensor, len(outs))
		for i, t := range outs {
			mine[i] = sliceRows(t, rows, off, it.rows)
		}
		it.done <- batchResult{outputs: mine}
		off += it.rows
	}
}

// checkRows refuses a runner's answer that has not one row per row asked:
// handing it on would give callers the wrong rows.
func checkRows(outs []*runnerv1.Tensor, rows int) error {
	for _, t := range outs {
		if len(t.GetShape()) == 0 || t.GetShape()[0] != int64(rows) {
			return fmt.Errorf("the runner answered output %s with shape %v for %d rows", t.GetName(), t.GetShape(), rows)
		}
	}
	return nil
}

// aligned reports whether two requests' inputs can share a batch.
func aligned(a, b []*runnerv1.Tensor) bool {
	return slices.EqualFunc(a, b, func(x, y *runnerv1.Tensor) bool {
		return x.GetName() == y.GetName() && x.GetDatatype() == y.GetDatatype() &&
			len(x.GetShape()) > 0 && slices.Equal(x.GetShape()[1:], y.GetShape()[1:])
	})
}

// concat joins the requests' inputs row-wise.
func concat(items []*batchItem, rows int) []*runnerv1.Tensor {
	out := make([]*runnerv1.Tensor, len(items[0].inputs))
	for i, t := range items[0].inputs {
		shape := slices.Clone(t.GetShape())
		shape[0] = int64(rows)
		c := &runnerv1.Tensor{Name: t.GetName(), Datatype: t.GetDatatype(), Shape: shape}
		for _, it := range items {
			in := it.inputs[i]
			c.Numbers = append(c.Numbers, in.GetNumbers()...)
			c.Strings = append(c.Strings, in.GetStrings()...)
		}
		out[i] = c
	}
	return out
}

// sliceRows is rows [off, off+n) of an output answering a batch of total
// rows.
func sliceRows(t *runnerv1.Tensor, total, off, n int) *runnerv1.Tensor {
	shape := slices.Clone(t.GetShape())
	shape[0] = int64(n)
	s := &runnerv1.Tensor{Name: t.GetName(), Datatype: t.GetDatatype(), Shape: shape}
	if nums := t.GetNumbers(); len(nums) > 0 {
		per := len(nums) / total
		s.Numbers = nums[off*per : (off+n)*per]
	}
	if strs := t.GetStrings(); len(strs) > 0 {
		per := len(strs) / total
		s.Strings = strs[off*per : (off+n)*per]
	}
	return s
}
