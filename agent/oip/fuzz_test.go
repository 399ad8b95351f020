package oip

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// FuzzDecodeInferRequest feeds the decoder arbitrary bodies (seeded from
// testdata/fuzz/FuzzDecodeInferRequest and the cases below). It must never
// panic; it must refuse with a RequestError or return a request whose
// tensors are whole; and what it accepts must survive encoding and
// decoding again unchanged.
func FuzzDecodeInferRequest(f *testing.F) {
	for _, seed := range []string{
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[[0.5,1,2]]}]}`,
		`{"id":"a","inputs":[{"name":"s","datatype":"BYTES","shape":[2],"data":["a","\u00e9"]}],"outputs":[{"name":"y"}]}`,
		`{"inputs":[{"name":"b","datatype":"BOOL","shape":[2,1],"data":[[true],[false]]}]}`,
		`{"inputs":[{"name":"i","datatype":"UINT8","shape":[2],"data":[0,255]}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeInferRequest(body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a RequestError", err)
			}
			return
		}
		for i, in := range r.Inputs {
			if err := in.Validate(); err != nil {
				t.Fatalf("input %d accepted but not whole: %v", i, err)
			}
		}
		checkAgainstEncodingJSON(t, body, r)
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("an accepted request does not encode: %v", err)
		}
		r2, err := DecodeInferRequest(again)
		if err != nil {
			t.Fatalf("the re-encoded request is refused: %v\n%s", err, again)
		}
		if r2.ID != r.ID || len(r2.Inputs) != len(r.Inputs) {
			t.Fatalf("round trip changed the request:\n%s", again)
		}
		for i := range r.Inputs {
			a, b := r.Inputs[i], r2.Inputs[i]
			if a.Name != b.Name || a.Datatype != b.Datatype || !reflect.DeepEqual(a.Shape, b.Shape) ||
				!slices.Equal(a.Numbers, b.Numbers) || !slices.Equal(a.Strings, b.Strings) {
				t.Fatalf("input %d changed in the round trip: %+v became %+v", i, a, b)
			}
		}
	})
}

// checkAgainstEncodingJSON decodes the same body with encoding/json and
// checks that the scanner read the same elements from every input.
func checkAgainstEncodingJSON(t *testing.T, body []byte, r *InferRequest) {
	// Maps, not a struct: keys match exactly, as the protocol wants
	// (encoding/json matches struct fields case-insensitively).
	var w map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		t.Fatalf("encoding/json refuses what the decoder took: %v", err)
	}
	inputs, _ := w["inputs"].([]any)
	if len(inputs) != len(r.Inputs) {
		t.Fatalf("%d inputs, encoding/json finds %d", len(r.Inputs), len(inputs))
	}
	for i, in := range r.Inputs {
		var flat []any
		var walk func(v any)
		walk = func(v any) {
			if a, ok := v.([]any); ok {
				for _, x := range a {
					walk(x)
				}
				return
			}
			flat = append(flat, v)
		}
		tensor, _ := inputs[i].(map[string]any)
		if tensor["name"] != in.Name || tensor["datatype"] != string(in.Datatype) {
			t.Fatalf("input %d: %s %s, encoding/json reads %v %v", i, in.Name, in.Datatype, tensor["name"], tensor["datatype"])
		}
		walk(tensor["data"])
		if len(flat) != in.Len() {
			t.Fatalf("input %d: %d elements, encoding/json finds %d", i, in.Len(), len(flat))
		}
		for j, v := range flat {
			switch x := v.(type) {
			case string:
				if in.Strings[j] != x {
					t.Fatalf("input %d element %d: %q, encoding/json reads %q", i, j, in.Strings[j], x)
				}
			case bool:
				if (in.Numbers[j] == 1) != x {
					t.Fatalf("input %d element %d: %v, encoding/json reads %v", i, j, in.Numbers[j], x)
				}
			case json.Number:
				want, err := in.Datatype.parse(string(x))
				if err != nil || want != in.Numbers[j] {
					t.Fatalf("input %d element %d: %v, encoding/json reads %s (%v)", i, j, in.Numbers[j], x, err)
				}
			default:
				t.Fatalf("input %d element %d: encoding/json reads %T", i, j, v)
			}
		}
	}
}
