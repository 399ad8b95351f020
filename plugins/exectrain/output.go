package exectrain

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	runnerv1 "github.com/droverhq/drover/proto/gen/drover/runner/v1"
)

const (
	// MaxLineBytes is the longest line of output sent whole; a longer one
	// is cut there, marked, and the rest of it dropped.
	MaxLineBytes = 16 << 10
	// tailLines and tailLineBytes bound the lines a RunError quotes.
	tailLines     = 20
	tailLineBytes = 512
)

// cutMark ends a line that was longer than MaxLineBytes.
var cutMark = fmt.Sprintf(" [cut: line longer than %d bytes]", MaxLineBytes)

// output turns the command's output into training events. Its memory is
// bounded whatever the command writes: one read buffer of MaxLineBytes and
// the tail.
type output struct {
	send func(*runnerv1.TrainResponse) error
	// failed is called once, with the error of the first send that fails;
	// after it nothing more is sent, but the output is still read, so that
	// the command does not block writing while it is being stopped.
	failed   func(error)
	sendErr  error
	fraction float64 // the last progress reported
	stage    string
	tail     [tailLines]string // a ring: next is the oldest once full
	next     int
	n        int
}

// copy reads r to its end, a line at a time.
func (o *output) copy(r io.Reader) error {
	br := bufio.NewReaderSize(r, MaxLineBytes)
	for {
		line, err := br.ReadSlice('\n')
		cut := errors.Is(err, bufio.ErrBufferFull)
		if cut {
			line = trimPartialRune(bytes.Clone(line))
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
		}
		if len(line) > 0 {
			o.line(line, cut)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// line handles one line of output, with or without its newline.
func (o *output) line(b []byte, cut bool) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	s := strings.ToValidUTF8(string(b), "\uFFFD") // protobuf strings must be UTF-8
	if cut {
		s += cutMark
	}
	o.remember(s)
	o.emit(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_LogLine{LogLine: s}})
	if cut {
		return
	}
	if p := o.directive(s); p != nil {
		o.emit(&runnerv1.TrainResponse{Event: &runnerv1.TrainResponse_Progress{Progress: p}})
	}
}

func (o *output) emit(ev *runnerv1.TrainResponse) {
	if o.sendErr != nil {
		return
	}
	if err := o.send(ev); err != nil {
		o.sendErr = err
		o.failed(err)
	}
}

// directive parses a drover:progress or drover:metric line, or returns nil
// for any other line.
func (o *output) directive(s string) *runnerv1.TrainProgress {
	rest, ok := strings.CutPrefix(s, "drover:")
	if !ok {
		return nil
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return nil
	}
	verb, fields := fields[0], fields[1:]
	switch verb {
	case "progress":
		if len(fields) == 0 {
			return nil
		}
		f, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || !(f >= 0 && f <= 1) {
			return nil
		}
		o.fraction = f
		if len(fields) > 1 {
			o.stage = strings.Join(fields[1:], " ")
		}
		return &runnerv1.TrainProgress{Fraction: o.fraction, Stage: o.stage}
	case "metric":
		if len(fields) != 2 {
			return nil
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			return nil
		}
		return &runnerv1.TrainProgress{Fraction: o.fraction, Stage: o.stage,
			Metrics: map[string]float64{fields[0]: v}}
	}
	return nil
}

// remember keeps s among the last lines, shortened.
func (o *output) remember(s string) {
	if len(s) > tailLineBytes {
		s = string(trimPartialRune([]byte(s[:tailLineBytes]))) + " [...]"
	}
	o.tail[o.next] = s
	o.next = (o.next + 1) % tailLines
	o.n = min(o.n+1, tailLines)
}

// lastLines returns the lines remembered, oldest first.
func (o *output) lastLines() []string {
	out := make([]string, 0, o.n)
	for i := range o.n {
		out = append(out, o.tail[(o.next-o.n+i+tailLines)%tailLines])
	}
	return out
}

// trimPartialRune drops an incomplete UTF-8 sequence from the end of b,
// where a cut may have split one.
func trimPartialRune(b []byte) []byte {
	for k := 1; k <= utf8.UTFMax && k <= len(b); k++ {
		if utf8.RuneStart(b[len(b)-k]) {
			if !utf8.FullRune(b[len(b)-k:]) {
				return b[:len(b)-k]
			}
			break
		}
	}
	return b
}
