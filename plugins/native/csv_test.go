package native

import (
	"slices"
	"strings"
	"testing"
)

func TestReadCSV(t *testing.T) {
	const in = "\uFEFFid,age,plan,zip,score,label\n" +
		"a1,34,basic,02139, 1.5,yes\n" +
		"a2,51.5,pro,10001,-2e1,no\n" +
		"a3,0,\"pro, annual\",94103,3,yes\n"
	ds, err := ReadCSV(strings.NewReader(in), "label", CSVOptions{Categorical: []string{"zip"}, Ignore: []string{"id"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []Column{
		{Name: "age", Numbers: []float64{34, 51.5, 0}},
		{Name: "plan", Categorical: true, Strings: []string{"basic", "pro", "pro, annual"}},
		{Name: "zip", Categorical: true, Strings: []string{"02139", "10001", "94103"}},
		{Name: "score", Numbers: []float64{1.5, -20, 3}},
	}
	if len(ds.Features) != len(want) {
		t.Fatalf("%d features, want %d: %+v", len(ds.Features), len(want), ds.Features)
	}
	for i, w := range want {
		g := ds.Features[i]
		if g.Name != w.Name || g.Categorical != w.Categorical || !slices.Equal(g.Numbers, w.Numbers) || !slices.Equal(g.Strings, w.Strings) {
			t.Errorf("feature %d = %+v, want %+v", i, g, w)
		}
	}
	if tg := ds.Target; tg.Name != "label" || !tg.Categorical || !slices.Equal(tg.Strings, []string{"yes", "no", "yes"}) {
		t.Errorf("target = %+v", tg)
	}
}

func TestReadCSVRegressionTarget(t *testing.T) {
	ds, err := ReadCSV(strings.NewReader("x,y\n1,2.5\n2,3.5\n"), "y", CSVOptions{Task: Regression})
	if err != nil {
		t.Fatal(err)
	}
	if tg := ds.Target; tg.Categorical || !slices.Equal(tg.Numbers, []float64{2.5, 3.5}) {
		t.Errorf("target = %+v", tg)
	}
}

// TestReadCSVColumnTypes: a column with any text, or only NaN and
// infinities, is categorical; empty values are allowed in categories.
func TestReadCSVColumnTypes(t *testing.T) {
	ds, err := ReadCSV(strings.NewReader("a,b,c,y\n1,NaN,,p\nx,Inf,q,p\n"), "y", CSVOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range ds.Features {
		if !f.Categorical {
			t.Errorf("feature %d (%s) is numeric", i, f.Name)
		}
	}
	if got := ds.Features[2].Strings; !slices.Equal(got, []string{"", "q"}) {
		t.Errorf("c = %q", got)
	}
}

func TestReadCSVErrors(t *testing.T) {
	for _, c := range []struct {
		name, in string
		opts     CSVOptions
		want     string
	}{
		{"empty", "", CSVOptions{}, "the file is empty"},
		{"header only", "x,y\n", CSVOptions{}, "no rows after the header"},
		{"no target", "x,z\n1,2\n", CSVOptions{}, `line 1: no target column "y"`},
		{"ragged short", "x,y\n1,a\n2\n", CSVOptions{}, "line 3: 1 field, where the header has 2"},
		{"ragged long", "x,y\n1,a\n2,b\n3,c,d\n", CSVOptions{}, "line 4: 3 fields"},
		{"line after a quoted newline", "x,y\n\"1\n2\",a\n2,b,c\n", CSVOptions{}, "line 4: 3 fields"},
		{"empty number", "x,y\n1,a\n,b\n", CSVOptions{}, "line 3, column x: an empty value in a numeric column"},
		{"empty label", "x,y\n1,a\n2,\n", CSVOptions{}, "line 3, column y: an empty class label"},
		{"text regression target", "x,y\n1,2\n2,big\n", CSVOptions{Task: Regression}, `line 3, column y: regression target "big" is not a number`},
		{"duplicate column", "x,x,y\n1,2,a\n", CSVOptions{}, `"x", is named twice`},
		{"unknown ignored column", "x,y\n1,a\n", CSVOptions{Ignore: []string{"id"}}, `no column "id"`},
		{"unknown categorical column", "x,y\n1,a\n", CSVOptions{Categorical: []string{"zip"}}, `no column "zip"`},
		{"target ignored", "x,y\n1,a\n", CSVOptions{Ignore: []string{"y"}}, "cannot be ignored"},
		{"only the target", "id,y\n1,a\n", CSVOptions{Ignore: []string{"id"}}, "no feature columns"},
		{"bad quote", "x,y\n1,a\"b\n", CSVOptions{}, "line 2"},
		{"unknown task", "x,y\n1,a\n", CSVOptions{Task: "ranking"}, `unknown task "ranking"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadCSV(strings.NewReader(c.in), "y", c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
