package oip

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestDecodeInferRequest(t *testing.T) {
	body := `{
	  "id": "req-1",
	  "parameters": {"sticky": true, "note": "x", "n": 3},
	  "inputs": [
	    {"name": "features", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2.5, -3], [4e2, 0.1, 6]]},
	    {"name": "flat", "datatype": "INT64", "shape": [2, 2], "data": [1, -2, 3, 9007199254740992]},
	    {"name": "plan", "datatype": "BYTES", "shape": [2], "data": ["basic", "pro \"plus\""]},
	    {"name": "flags", "datatype": "BOOL", "shape": [3], "data": [true, false, true]},
	    {"name": "scalar", "datatype": "FP64", "shape": [], "data": [0.1]}
	  ],
	  "outputs": [{"name": "probability"}]
	}`
	r, err := DecodeInferRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "req-1" || len(r.Inputs) != 5 || r.Outputs[0].Name != "probability" || r.Parameters["sticky"] != true {
		t.Fatalf("decoded %+v", r)
	}
	want := map[string]any{
		"features": []float64{1, 2.5, -3, 400, float64(float32(0.1)), 6},
		"flat":     []float64{1, -2, 3, 1 << 53},
		"plan":     []string{"basic", `pro "plus"`},
		"flags":    []float64{1, 0, 1},
		"scalar":   []float64{0.1},
	}
	for name, w := range want {
		in := r.Input(name)
		var got any = in.Numbers
		if in.Datatype == Bytes {
			got = in.Strings
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s: %v, want %v", name, got, w)
		}
	}
	if r.Input("missing") != nil {
		t.Error("Input found a tensor that is not there")
	}
}

func TestDecodeErrors(t *testing.T) {
	in := func(tensor string) string { return `{"inputs":[` + tensor + `]}` }
	cases := []struct{ body, want string }{
		{`{`, "malformed JSON"},
		{`[]`, "want a JSON object, not an array"},
		{`{"inputs": {}}`, "inputs: want an array, not an object"},
		{`{"inputs":[{"name":"a","datatype":"FP32","shape":[1.5],"data":[1]}]}`, "inputs[0].shape: dimension 0 is 1.5, not an integer"},
		{`{"inputs":[{"name":7,"datatype":"FP32","shape":[1],"data":[1]}]}`, "inputs[0].name: want a string, not a number"},
		{`{"inputs":[5]}`, "inputs[0]: not a tensor: want a JSON object, not a number"},
		{`{"inputs":[]}`, "inputs: a request needs at least one input"},
		{`{"id": 7, "inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1]}]}`, "id: want a string"},
		{`{"parameters": {"p": [1]}, "inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1]}]}`, `parameters: parameter "p": want a string, number or boolean, not an array`},
		{in(`{"datatype":"FP32","shape":[1],"data":[1]}`), "inputs[0].name: empty"},
		{in(`{"name":"a","datatype":"FLOAT","shape":[1],"data":[1]}`), `inputs[0].datatype: "FLOAT" is not one of the protocol's datatypes`},
		{in(`{"name":"a","datatype":"FP32","data":[1]}`), "inputs[0].shape: missing"},
		{in(`{"name":"a","datatype":"FP32","shape":[-1],"data":[1]}`), "inputs[0].shape: dimension 0 is -1"},
		{in(`{"name":"a","datatype":"FP32","shape":[1]}`), "inputs[0].data: missing"},
		{in(`{"name":"a","datatype":"FP32","shape":[1],"data":1}`), "inputs[0].data: want an array, not a number"},
		{in(`{"name":"a","datatype":"FP32","shape":[3],"data":[1,2]}`), "inputs[0].data: 2 elements, where the shape [3] holds 3"},
		{in(`{"name":"a","datatype":"FP32","shape":[1],"data":[1,2]}`), "inputs[0].data: more than the 1 elements"},
		{in(`{"name":"a","datatype":"FP32","shape":[2,2],"data":[[1,2],[3]]}`), "an array of 1 items at depth 1, where the shape [2 2] wants 2"},
		{in(`{"name":"a","datatype":"FP32","shape":[2,2],"data":[[1,2],3,4]}`), "an element at depth 0"},
		{in(`{"name":"a","datatype":"FP32","shape":[4],"data":[1,[2,3],4]}`), "arrays nested deeper than the shape"},
		{in(`{"name":"a","datatype":"FP32","shape":[1],"data":["1"]}`), "inputs[0].data: element 0: want a number for FP32, not a string"},
		{in(`{"name":"a","datatype":"FP32","shape":[1],"data":[1e39]}`), "out of range for FP32"},
		{in(`{"name":"a","datatype":"FP16","shape":[1],"data":[70000]}`), "out of range for FP16"},
		{in(`{"name":"a","datatype":"FP64","shape":[1],"data":[1e999]}`), "out of range for FP64"},
		{in(`{"name":"a","datatype":"INT32","shape":[1],"data":[1.5]}`), "1.5 is not an integer, as INT32 wants"},
		{in(`{"name":"a","datatype":"UINT8","shape":[1],"data":[256]}`), "256 is out of range for UINT8 [0, 255]"},
		{in(`{"name":"a","datatype":"INT8","shape":[1],"data":[-129]}`), "out of range for INT8"},
		{in(`{"name":"a","datatype":"INT64","shape":[1],"data":[9007199254740993]}`), "out of range for INT64"},
		{in(`{"name":"a","datatype":"BOOL","shape":[1],"data":[1]}`), "want true or false for BOOL, not a number"},
		{in(`{"name":"a","datatype":"BYTES","shape":[1],"data":[1]}`), "want a string for BYTES, not a number"},
		{in(`{"name":"a","datatype":"FP32","shape":[1],"data":[null]}`), "want a number for FP32, not null"},
		{in(`{"name":"a","datatype":"FP32","shape":[1],"data":[{}]}`), "want a number for FP32, not an object"},
		{in(`{"name":"a","datatype":"FP32","shape":[100000,100000,100000],"data":[1]}`), "a shape of more than"},
		{in(`{"name":"a","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4},"data":[1]}`), "binary tensor data extension is not supported"},
		{`{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1]},{"name":"a","datatype":"FP32","shape":[1],"data":[1]}]}`, `inputs[1].name: "a" appears twice`},
		{`{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1]}],"outputs":[{"name":""}]}`, "outputs[0].name: empty"},
		{`{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[1]}],"outputs":[{"name":"p"},{"name":"p"}]}`, `outputs[1].name: "p" appears twice`},
	}
	// Many inputs: names are checked for repeats with a map.
	var many []string
	for i := range 100 {
		many = append(many, fmt.Sprintf(`{"name":"f%d","datatype":"FP32","shape":[1],"data":[1]}`, i))
	}
	for _, at := range []int{1, 40, 99} {
		dup := slices.Clone(many)
		dup[at] = strings.Replace(dup[at], fmt.Sprintf("f%d", at), "f0", 1)
		cases = append(cases, struct{ body, want string }{`{"inputs":[` + strings.Join(dup, ",") + `]}`, fmt.Sprintf(`inputs[%d].name: "f0" appears twice`, at)})
	}
	if _, err := DecodeInferRequest([]byte(`{"inputs":[` + strings.Join(many, ",") + `]}`)); err != nil {
		t.Errorf("100 distinct inputs: %v", err)
	}
	for _, c := range cases {
		_, err := DecodeInferRequest([]byte(c.body))
		var re *RequestError
		if !errors.As(err, &re) {
			t.Errorf("%s: error %v is not a RequestError", c.body, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got  %v\n want %s", c.body, err, c.want)
		}
	}
}

func TestTensorRoundTrip(t *testing.T) {
	tensors := []*Tensor{
		{Name: "p", Datatype: FP32, Shape: []int64{2}, Numbers: []float64{float64(float32(0.1)), -1e-7}},
		{Name: "x", Datatype: FP64, Shape: []int64{1, 2}, Numbers: []float64{math.Pi, 1e300}},
		{Name: "i", Datatype: Int64, Shape: []int64{2}, Numbers: []float64{-(1 << 53), 42}},
		{Name: "b", Datatype: Bool, Shape: []int64{2}, Numbers: []float64{1, 0}},
		{Name: "s", Datatype: Bytes, Shape: []int64{3}, Strings: []string{"", "<tag>&", "ünï\n"}, Parameters: Parameters{"content_type": "str"}},
		{Name: "empty", Datatype: FP32, Shape: []int64{0, 4}, Numbers: []float64{}},
	}
	resp := InferResponse{ModelName: "churn", ModelVersion: "3", ID: "r", Outputs: tensors}
	b, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var back InferResponse
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	for i, tt := range tensors {
		got := back.Outputs[i]
		if got.Name != tt.Name || got.Datatype != tt.Datatype || !reflect.DeepEqual(got.Shape, tt.Shape) ||
			got.Len() != tt.Len() || (tt.Len() > 0 && !reflect.DeepEqual(got.Numbers, tt.Numbers) && !reflect.DeepEqual(got.Strings, tt.Strings)) {
			t.Errorf("tensor %d: %+v, want %+v", i, got, tt)
		}
	}
	for _, bad := range []*Tensor{
		{Name: "nan", Datatype: FP64, Shape: []int64{1}, Numbers: []float64{math.NaN()}},
		{Name: "short", Datatype: FP64, Shape: []int64{2}, Numbers: []float64{1}},
		{Name: "kind", Datatype: Bytes, Shape: []int64{1}, Numbers: []float64{1}},
	} {
		if _, err := json.Marshal(bad); err == nil {
			t.Errorf("tensor %s encoded", bad.Name)
		}
	}
}

// BenchmarkDecode20Features decodes a single-row request of 20 FP32
// features, the shape of the prediction benchmarks' model.
func BenchmarkDecode20Features(b *testing.B) {
	body := []byte(`{"id":"r1","inputs":[{"name":"features","datatype":"FP32","shape":[1,20],"data":[[0.1,1.5,-2,3.25,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19]]}]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeInferRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}
