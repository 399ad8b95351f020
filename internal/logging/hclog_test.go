package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, Options{Level: "info"})
	if err != nil {
		t.Fatal(err)
	}
	h := HCLog(l, "raft").Named("snapshot").With("node", "hub-1")
	h.Debug("hidden")
	h.Info("entering leader state", "servers", hclog.Fmt("%d servers", 3), 7, "odd")
	h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN] disk slow")
	out := buf.String()
	for _, want := range []string{
		`level=INFO msg="entering leader state" component=raft.snapshot node=hub-1 servers="3 servers" 7=odd`,
		`level=WARN msg="disk slow"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") || !h.IsInfo() || h.IsDebug() {
		t.Errorf("levels not honoured:\n%s", out)
	}
}

func TestNewRejectsUnknown(t *testing.T) {
	if _, err := New(nil, Options{Format: "xml"}); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := New(nil, Options{Level: "loud"}); err == nil {
		t.Error("level loud accepted")
	}
}
