package oip

import (
	"errors"
	"strings"
	"testing"

	droverv1 "github.com/droverhq/drover/proto/gen/drover/v1"
)

func churnSchema(t *testing.T) *Schema {
	t.Helper()
	lo, hi := 0.0, 120.0
	s, err := CompileSchema(&droverv1.FeatureSchema{
		Inputs: []*droverv1.Feature{
			{Name: "tenure", Datatype: "FP32", Kind: droverv1.FeatureKind_FEATURE_KIND_NUMERIC, Min: &lo, Max: &hi},
			{Name: "plan", Datatype: "BYTES", Kind: droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, Categories: []string{"basic", "pro"}},
			{Name: "seats", Datatype: "INT32", Kind: droverv1.FeatureKind_FEATURE_KIND_CATEGORICAL, Categories: []string{"1", "5", "10"}},
			{Name: "usage", Datatype: "FP64", Shape: []int64{3}},
			{Name: "coupon", Datatype: "BOOL", Nullable: true},
		},
		Outputs: []*droverv1.Feature{{Name: "probability", Datatype: "FP64"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSchemaCheck(t *testing.T) {
	s := churnSchema(t)
	req := func(extra string) string {
		return `{"inputs":[
		  {"name":"tenure","datatype":"FP32","shape":[2],"data":[3, 120]},
		  {"name":"plan","datatype":"BYTES","shape":[2],"data":["basic","pro"]},
		  {"name":"seats","datatype":"INT32","shape":[2],"data":[1, 10]},
		  {"name":"usage","datatype":"FP64","shape":[2,3],"data":[[1,2,3],[4,5,6]]}` + extra + `]}`
	}
	r, err := DecodeInferRequest([]byte(req("")))
	if err != nil {
		t.Fatal(err)
	}
	if rows, err := s.Check(r); err != nil || rows != 2 {
		t.Fatalf("a good request: %d rows, %v", rows, err)
	}
	cases := []struct{ body, want string }{
		{req(`,{"name":"tenur","datatype":"FP32","shape":[2],"data":[1,2]}`), `inputs[4].name: "tenur" is not an input of this model, which takes tenure, plan, seats, usage, coupon`},
		{req(`,{"name":"coupon","datatype":"INT8","shape":[2],"data":[1,0]}`), "inputs[4].datatype: INT8, where the schema says BOOL for coupon"},
		{req(`,{"name":"coupon","datatype":"BOOL","shape":[2,1],"data":[true,false]}`), "inputs[4].shape: [2 1]: coupon wants [rows]"},
		{req(`,{"name":"coupon","datatype":"BOOL","shape":[3],"data":[true,false,true]}`), "inputs[4].shape: 3 rows, where tenure has 2"},
		{strings.Replace(req(""), `[3, 120]`, `[3, 121]`, 1), "inputs[0].data: element 1: 121 is above tenure's maximum 120"},
		{strings.Replace(req(""), `[3, 120]`, `[-1, 1]`, 1), "inputs[0].data: element 0: -1 is below tenure's minimum 0"},
		{strings.Replace(req(""), `"pro"`, `"gold"`, 1), `inputs[1].data: element 1: "gold" is not a category of plan (basic, pro)`},
		{strings.Replace(req(""), `[1, 10]`, `[1, 7]`, 1), `inputs[2].data: element 1: "7" is not a category of seats (1, 5, 10)`},
		{strings.Replace(req(""), `"shape":[2,3],"data":[[1,2,3],[4,5,6]]`, `"shape":[3,2],"data":[[1,2],[3,4],[5,6]]`, 1), "inputs[3].shape: [3 2]: usage wants [rows, 3]"},
		{`{"inputs":[{"name":"tenure","datatype":"FP32","shape":[1],"data":[3]}]}`, `inputs: "plan" is missing; this model takes tenure, plan, seats, usage, coupon`},
		{`{"inputs":[{"name":"tenure","datatype":"FP32","shape":[0],"data":[]}]}`, `inputs[0].shape: no rows`},
	}
	for _, c := range cases {
		r, err := DecodeInferRequest([]byte(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		_, err = s.Check(r)
		var re *RequestError
		if !errors.As(err, &re) || err.Error() != c.want {
			t.Errorf("\n got  %v\n want %s", err, c.want)
		}
	}
}

func TestSchemaCompileAndMetadata(t *testing.T) {
	s := churnSchema(t)
	md := s.Metadata("churn", "drover-native", []string{"3"})
	if len(md.Inputs) != 5 || md.Inputs[3].Name != "usage" || len(md.Inputs[3].Shape) != 2 || md.Inputs[3].Shape[0] != -1 || md.Inputs[3].Shape[1] != 3 ||
		md.Outputs[0].Name != "probability" || md.Outputs[0].Shape[0] != -1 {
		t.Fatalf("metadata %+v", md)
	}
	lo, hi := 5.0, 1.0
	for _, bad := range []*droverv1.FeatureSchema{
		{Inputs: []*droverv1.Feature{{Datatype: "FP32"}}},
		{Inputs: []*droverv1.Feature{{Name: "a", Datatype: "float"}}},
		{Inputs: []*droverv1.Feature{{Name: "a", Datatype: "FP32"}, {Name: "a", Datatype: "FP32"}}},
		{Inputs: []*droverv1.Feature{{Name: "a", Datatype: "FP32", Min: &lo, Max: &hi}}},
		{Outputs: []*droverv1.Feature{{Name: "y", Datatype: "DOUBLE"}}},
	} {
		if _, err := CompileSchema(bad); err == nil {
			t.Errorf("schema %v compiled", bad)
		}
	}
}
