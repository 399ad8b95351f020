package churn

import _ "embed"

// The bundled splits are what Generate gives for these rows and seeds at
// Drift 0, written by WriteCSV. TestBundledFiles checks that the files
// still match; after a deliberate change to the generator,
// `go generate ./internal/churn` rewrites them.
const (
	TrainRows = 4000
	TrainSeed = 1
	TestRows  = 1000
	TestSeed  = 2
)

//go:generate go test -run TestBundledFiles -update

//go:embed testdata/churn_train.csv
var trainCSV string

//go:embed testdata/churn_test.csv
var testCSV string

// TrainCSV returns the bundled training split (TrainRows customers,
// TrainSeed) as CSV. The slice is a fresh copy, the caller's to keep.
func TrainCSV() []byte { return []byte(trainCSV) }

// TestCSV returns the bundled test split (TestRows customers, TestSeed) as
// CSV. The slice is a fresh copy, the caller's to keep.
func TestCSV() []byte { return []byte(testCSV) }
