package training

import (
	"io"
	"strings"
	"testing"
)

func readers(files ...string) []io.Reader {
	out := make([]io.Reader, len(files))
	for i, f := range files {
		out[i] = strings.NewReader(f)
	}
	return out
}

func TestAssemble(t *testing.T) {
	for _, tc := range []struct {
		name     string
		base     string // "-" for none
		labelled []string
		want     string
		rows     int
	}{
		{
			name: "base and labelled files",
			base: "id,age,plan,churn\nc1,30,basic,no\nc2,41,pro,yes\n",
			labelled: []string{
				// Features in another order, an extra column, id kept
				// (the base has one), version dropped.
				"id,version,plan,age,extra,label\nr1,3,pro,25,x,yes\nr2,3,basic,52,y,no\n",
				"", // nothing at all
				"id,version,label\n",
				// A file without plan: empty cells.
				"id,version,age,label\nr3,4,60,no\n",
			},
			want: "id,age,plan,churn\nc1,30,basic,no\nc2,41,pro,yes\nr1,25,pro,yes\nr2,52,basic,no\nr3,60,,no\n",
			rows: 5,
		},
		{
			name: "base without id: the labelled ids go",
			base: "age,price\n30,1.5\n",
			labelled: []string{
				"id,version,age,value\nr1,2,44,2.25\n",
			},
			want: "age,price\n30,1.5\n44,2.25\n",
			rows: 2,
		},
		{
			name: "no base: the first file with rows gives the columns",
			base: "-",
			labelled: []string{
				"id,version,label\n", // a header only: no features to go by
				"id,version,age,plan,label\nr1,1,30,basic,no\n",
				"id,version,plan,age,label\nr2,2,pro,41,yes\n",
			},
			want: "age,plan,churn\n30,basic,no\n41,pro,yes\n",
			rows: 2,
		},
		{
			name:     "no base, no rows",
			base:     "-",
			labelled: []string{"", "id,version,label\n"},
			want:     "",
			rows:     0,
		},
		{
			name:     "a base alone, quoted cells kept",
			base:     "note,churn\n\"a, b\",no\n",
			labelled: nil,
			want:     "note,churn\n\"a, b\",no\n",
			rows:     1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var base io.Reader
			if tc.base != "-" {
				base = strings.NewReader(tc.base)
			}
			target := "churn"
			if strings.Contains(tc.base, "price") {
				target = "price"
			}
			var out strings.Builder
			rows, err := Assemble(&out, base, readers(tc.labelled...), target)
			if err != nil {
				t.Fatal(err)
			}
			if rows != tc.rows || out.String() != tc.want {
				t.Fatalf("%d rows:\n%s\nwant %d rows:\n%s", rows, out.String(), tc.rows, tc.want)
			}
		})
	}
}

func TestAssembleErrors(t *testing.T) {
	good := "id,version,age,label\nr1,1,30,no\n"
	for _, tc := range []struct {
		name     string
		base     string
		labelled []string
		target   string
		want     string
	}{
		{"no target", "a,b\n1,2\n", nil, "", "no target column named"},
		{"base without the target", "a,b\n1,2\n", nil, "churn", `base: no target column "churn" among its columns ["a" "b"]`},
		{"empty base", "", nil, "churn", "base: the data set is empty"},
		{"base with a repeated column", "a,a,churn\n", nil, "churn", `base, line 1: column "a" appears twice`},
		{"malformed base row", "a,churn\n1,no\n2\n", nil, "churn", "base: record on line 3: wrong number of fields"},
		{"malformed labelled row", "a,churn\n", []string{good, "id,version,a,label\nr1,1,2,no\nr2,1,no\n"}, "churn",
			"labelled[1]: record on line 3: wrong number of fields"},
		{"malformed first labelled row", "a,churn\n", []string{"id,version,a,label\nr1,1\n"}, "churn",
			"labelled[0]: record on line 2: wrong number of fields"},
		{"bad quoting", "a,churn\n", []string{good, good, "id,version,a,label\nr1,1,\"2,no\n"}, "churn",
			"labelled[2]: parse error on line 2"},
		{"no label column", "a,churn\n", []string{"id,version,a,churn\nr1,1,2,no\n"}, "churn",
			`labelled[0], line 1: the last column is "churn"; a labelled file ends with label or value`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			_, err := Assemble(&out, strings.NewReader(tc.base), readers(tc.labelled...), tc.target)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}
