package cli

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strconv"
	"unicode/utf8"

	"github.com/droverhq/drover/internal/buildinfo"
	"github.com/droverhq/drover/internal/drift"
)

// compareHTMLTemplate is the drift report: one self-contained page, its CSS
// inline and its charts inline SVG drawn here, with no script and no
// reference to anything outside the file.
//
//go:embed templates/drift.html
var compareHTMLTemplate string

var compareHTML = template.Must(template.New("drift.html").Parse(compareHTMLTemplate))

// compareHTMLPage is the template's data. Everything from the data (file
// names, feature names, categories) reaches the page through html/template,
// which escapes it.
type compareHTMLPage struct {
	Report   compareReportView
	Features []compareHTMLFeature
	Version  string
}

// compareHTMLFeature is one feature's row and section.
type compareHTMLFeature struct {
	compareFeatureView
	ID            string // the section's anchor: "f" and the feature's index, never its name
	ScoreText     string // Score as printed, "-" without a verdict
	ThresholdText string
	Status        string // "drift", "no drift" or "insufficient data"
	Target        bool
	Stats         []compareHTMLStat
	Chart         *svgChart
}

// compareHTMLStat is one statistic in a feature's section.
type compareHTMLStat struct {
	Name, Value string
}

// svgChart is a chart's geometry, computed here so that the template only
// places shapes. Coordinates are preformatted numbers.
type svgChart struct {
	Width, Height int
	Bars          []svgRect
	Lines         []svgLine
	Texts         []svgText
}

type svgRect struct {
	X, Y, W, H string
	Class      string
	Tip        string
}

type svgLine struct {
	X1, Y1, X2, Y2 string
}

type svgText struct {
	X, Y   string
	Anchor string // start, middle or end
	Rotate bool   // slanted, for category labels
	Text   string
}

// writeCompareHTML writes the report as one self-contained HTML file, by way
// of a temporary file in the same directory so that a failure leaves no
// half-written report.
func writeCompareHTML(path string, v compareReportView, hists []compareHistogram) error {
	page := compareHTMLPage{Report: v, Version: buildinfo.Get().Version}
	for i, f := range v.Features {
		hf := compareHTMLFeature{
			compareFeatureView: f,
			ID:                 "f" + strconv.Itoa(i),
			ScoreText:          formatStat(float64(f.Score)),
			ThresholdText:      formatStat(float64(f.Threshold)),
			Status:             compareStatus(f),
			Target:             v.Target != "" && f.Name == v.Target,
			Stats:              compareStats(f),
		}
		if f.Verdict == drift.VerdictInsufficientData {
			hf.ScoreText = "-"
		}
		if i < len(hists) {
			hf.Chart = compareChart(hists[i])
		}
		page.Features = append(page.Features, hf)
	}
	var buf bytes.Buffer
	if err := compareHTML.Execute(&buf, page); err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".drift-*.html")
	if err != nil {
		// Named by the path asked for, not the temporary file beside it.
		if pe, ok := errors.AsType[*os.PathError](err); ok {
			err = pe.Err
		}
		return fmt.Errorf("html report %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("html report %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("html report %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("html report %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("html report %s: %w", path, err)
	}
	return nil
}

func compareStatus(f compareFeatureView) string {
	switch {
	case f.Verdict == drift.VerdictInsufficientData:
		return "insufficient data"
	case f.Drifted:
		return "drift"
	}
	return "no drift"
}

// compareStats lists the statistics that apply to a feature, as the JSON
// names them.
func compareStats(f compareFeatureView) []compareHTMLStat {
	var s []compareHTMLStat
	add := func(name string, v *jsonNumber) {
		if v != nil {
			s = append(s, compareHTMLStat{name, formatStat(float64(*v))})
		}
	}
	if f.KS != nil {
		s = append(s, compareHTMLStat{"ks statistic", formatStat(float64(f.KS.Statistic))},
			compareHTMLStat{"ks p-value", formatStat(float64(f.KS.PValue))})
	}
	add("wasserstein (normed)", f.WassersteinNormed)
	if f.Chi2 != nil {
		s = append(s, compareHTMLStat{"chi² statistic", formatStat(float64(f.Chi2.Statistic))},
			compareHTMLStat{"chi² p-value", formatStat(float64(f.Chi2.PValue))})
	}
	if f.Z != nil {
		s = append(s, compareHTMLStat{"z statistic", formatStat(float64(f.Z.Statistic))},
			compareHTMLStat{"z p-value", formatStat(float64(f.Z.PValue))})
	}
	add("psi", f.PSI)
	add("jensen–shannon", f.JensenShannon)
	add("hellinger", f.Hellinger)
	s = append(s,
		compareHTMLStat{"rows (ref / cur)", fmt.Sprintf("%d / %d", f.ReferenceRows, f.CurrentRows)},
		compareHTMLStat{"nulls (ref / cur)", fmt.Sprintf("%d / %d", f.ReferenceNulls, f.CurrentNulls)})
	return s
}

// Chart layout, in SVG user units.
const (
	chartLeft   = 48.0
	chartRight  = 12.0
	chartTop    = 12.0
	chartPlotH  = 150.0
	chartWidth  = 640
	chartBottom = 28.0 // numeric: room for the axis labels
	chartSlant  = 84.0 // categorical: room for slanted labels
)

func svgPx(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func sharePercent(v float64) string { return strconv.FormatFloat(100*v, 'f', 1, 64) + "%" }

// compareChart draws a histogram: overlaid bars on the same bins for a numeric
// feature, a pair of bars per category for a categorical one; each as the
// share of its sample's non-null values. It returns nil when there is
// nothing to draw.
func compareChart(h compareHistogram) *svgChart {
	if len(h.Ref) == 0 {
		return nil
	}
	rs, cs := countShares(h.Ref), countShares(h.Cur)
	top := 0.0
	for i := range rs {
		top = max(top, rs[i], cs[i])
	}
	if top == 0 {
		return nil
	}
	height := func(s float64) float64 { return s / top * chartPlotH }
	base := chartTop + chartPlotH
	c := &svgChart{}
	n := float64(len(rs))

	var plotW float64
	if h.Numeric {
		c.Width = chartWidth
		plotW = float64(chartWidth) - chartLeft - chartRight
		c.Height = int(base + chartBottom)
		bw := plotW / n
		for i := range rs {
			x := chartLeft + float64(i)*bw
			tip := fmt.Sprintf("[%s, %s%s: reference %s, current %s", formatStat(h.Edges[i]), formatStat(h.Edges[i+1]),
				map[bool]string{true: "]", false: ")"}[i == len(rs)-1], sharePercent(rs[i]), sharePercent(cs[i]))
			c.Bars = append(c.Bars,
				svgRect{X: svgPx(x), Y: svgPx(base - height(rs[i])), W: svgPx(bw), H: svgPx(height(rs[i])), Class: "ref", Tip: tip},
				svgRect{X: svgPx(x), Y: svgPx(base - height(cs[i])), W: svgPx(bw), H: svgPx(height(cs[i])), Class: "cur", Tip: tip})
		}
		mid := (h.Edges[0] + h.Edges[len(h.Edges)-1]) / 2
		c.Texts = append(c.Texts,
			svgText{X: svgPx(chartLeft), Y: svgPx(base + 18), Anchor: "start", Text: formatStat(h.Edges[0])},
			svgText{X: svgPx(chartLeft + plotW/2), Y: svgPx(base + 18), Anchor: "middle", Text: formatStat(mid)},
			svgText{X: svgPx(chartLeft + plotW), Y: svgPx(base + 18), Anchor: "end", Text: formatStat(h.Edges[len(h.Edges)-1])})
	} else {
		gw := min(max((float64(chartWidth)-chartLeft-chartRight)/n, 28), 80)
		plotW = gw * n
		c.Width = int(chartLeft + plotW + chartRight + 40) // the last slanted label
		c.Height = int(base + chartSlant)
		bw := gw * 0.38
		for i, label := range h.Labels {
			x := chartLeft + float64(i)*gw + gw*0.12
			tip := fmt.Sprintf("%s: reference %s, current %s", label, sharePercent(rs[i]), sharePercent(cs[i]))
			c.Bars = append(c.Bars,
				svgRect{X: svgPx(x), Y: svgPx(base - height(rs[i])), W: svgPx(bw), H: svgPx(height(rs[i])), Class: "ref", Tip: tip},
				svgRect{X: svgPx(x + bw), Y: svgPx(base - height(cs[i])), W: svgPx(bw), H: svgPx(height(cs[i])), Class: "cur", Tip: tip})
			c.Texts = append(c.Texts, svgText{X: svgPx(chartLeft + (float64(i)+0.5)*gw), Y: svgPx(base + 12), Anchor: "end", Rotate: true, Text: shortenLabel(label, 14)})
		}
	}
	c.Lines = append(c.Lines,
		svgLine{X1: svgPx(chartLeft), Y1: svgPx(base), X2: svgPx(chartLeft + plotW), Y2: svgPx(base)},
		svgLine{X1: svgPx(chartLeft), Y1: svgPx(chartTop), X2: svgPx(chartLeft), Y2: svgPx(base)})
	c.Texts = append(c.Texts,
		svgText{X: svgPx(chartLeft - 4), Y: svgPx(chartTop + 8), Anchor: "end", Text: sharePercent(top)},
		svgText{X: svgPx(chartLeft - 4), Y: svgPx(base), Anchor: "end", Text: "0%"})
	return c
}

// shortenLabel cuts s to at most n characters, marking the cut with "…".
func shortenLabel(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
