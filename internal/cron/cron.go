// Package cron parses cron schedules and computes when they next fire.
//
// A schedule is either five space-separated fields,
//
//	minute hour day-of-month month day-of-week
//
// or one of the descriptors @yearly (or @annually), @monthly, @weekly,
// @daily (or @midnight) and @hourly. Each field is a comma-separated list
// of elements, and each element is one of
//
//	a        the single value a
//	a-b      the values a to b inclusive
//	*        every value of the field
//	*/n      every n-th value of the field, starting at its minimum
//	a-b/n    every n-th value from a to b
//	a/n      every n-th value from a to the field's maximum
//
// The fields take minute 0-59, hour 0-23, day-of-month 1-31, month 1-12
// and day-of-week 0-7, where both 0 and 7 are Sunday. Months may also be
// written jan-dec and days of the week sun-sat, in any case, wherever a
// number may appear. A step n runs from 1 to the number of values the field
// has (60 for minutes, 7 for days of the week).
//
// Days follow Vixie cron: when both day-of-month and day-of-week are
// restricted (neither field starts with "*"), a day matches if either of
// them matches; otherwise it must match both. So "0 0 1 * mon" fires at
// midnight on the first of every month and on every Monday, while
// "0 0 */2 * mon" fires only on Mondays that fall on odd days of the month.
//
// Every schedule is in UTC.
package cron

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// horizon is how far past its argument Next looks for a match.
const horizon = 5 // years

// Schedule is a parsed schedule. Create one with Parse; it is immutable
// and safe for concurrent use.
type Schedule struct {
	expr string
	// Bit v of a set is 1 when value v of the field matches. dow holds
	// Sunday as bit 0 only.
	minute, hour, dom, month, dow uint64
	// domStar and dowStar record that the field starts with "*", which
	// selects between the AND and the OR of the two day fields.
	domStar, dowStar bool
}

// field describes one of the five fields.
type field struct {
	name   string
	lo, hi int      // the values the field accepts
	starHi int      // where "*" and "a/n" end
	names  []string // names for lo, lo+1, ..., if any
}

var fields = [5]field{
	{name: "minute", lo: 0, hi: 59, starHi: 59},
	{name: "hour", lo: 0, hi: 23, starHi: 23},
	{name: "day-of-month", lo: 1, hi: 31, starHi: 31},
	{name: "month", lo: 1, hi: 12, starHi: 12, names: []string{
		"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
	}},
	{name: "day-of-week", lo: 0, hi: 7, starHi: 6, names: []string{
		"sun", "mon", "tue", "wed", "thu", "fri", "sat",
	}},
}

var descriptors = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// Parse parses a five-field schedule "minute hour day-of-month month
// day-of-week" or a descriptor: @yearly (@annually), @monthly, @weekly,
// @daily (@midnight), @hourly. The fields may be separated by any run of
// spaces or tabs. The error names the expression and, where it lies in
// one, the field, as in
//
//	cron "0 25 * * *": hour: 25 is out of range 0-23
func Parse(expr string) (*Schedule, error) {
	s, err := parse(expr)
	if err != nil {
		return nil, fmt.Errorf("cron %q: %s", expr, err)
	}
	s.expr = expr
	return s, nil
}

func parse(expr string) (*Schedule, error) {
	fs := strings.Fields(expr)
	if len(fs) == 0 {
		return nil, fmt.Errorf("empty expression")
	}
	if strings.HasPrefix(fs[0], "@") {
		exp, ok := descriptors[strings.ToLower(fs[0])]
		if !ok {
			return nil, fmt.Errorf("unknown descriptor %q (want @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)", fs[0])
		}
		if len(fs) > 1 {
			return nil, fmt.Errorf("descriptor %s takes no fields, have %q after it", fs[0], strings.Join(fs[1:], " "))
		}
		fs = strings.Fields(exp)
	}
	if len(fs) != len(fields) {
		return nil, fmt.Errorf("want 5 fields (minute hour day-of-month month day-of-week), have %d", len(fs))
	}
	var sets [5]uint64
	for i, f := range fields {
		set, err := f.parse(fs[i])
		if err != nil {
			return nil, fmt.Errorf("%s: %s", f.name, err)
		}
		sets[i] = set
	}
	s := &Schedule{
		minute:  sets[0],
		hour:    sets[1],
		dom:     sets[2],
		month:   sets[3],
		dow:     sets[4],
		domStar: strings.HasPrefix(fs[2], "*"),
		dowStar: strings.HasPrefix(fs[4], "*"),
	}
	if s.dow&(1<<7) != 0 { // 7 is Sunday too
		s.dow = s.dow&^(1<<7) | 1
	}
	return s, nil
}

// parse parses a comma-separated list of elements.
func (f *field) parse(list string) (uint64, error) {
	var set uint64
	for elem := range strings.SplitSeq(list, ",") {
		if elem == "" {
			return 0, fmt.Errorf("empty element in list %q", list)
		}
		s, err := f.parseElem(elem)
		if err != nil {
			return 0, err
		}
		set |= s
	}
	return set, nil
}

// parseElem parses one element of a list: "*", "a", "a-b", each
// optionally followed by "/n".
func (f *field) parseElem(elem string) (uint64, error) {
	rng, stepStr, hasStep := strings.Cut(elem, "/")
	step := 1
	if hasStep {
		if strings.Contains(stepStr, "/") {
			return 0, fmt.Errorf("malformed step in %q: more than one \"/\"", elem)
		}
		if !isDigits(stepStr) {
			return 0, fmt.Errorf("step %q in %q is not a number", stepStr, elem)
		}
		n, err := strconv.Atoi(stepStr)
		if span := f.starHi - f.lo + 1; err != nil || n < 1 || n > span {
			return 0, fmt.Errorf("step %s in %q is out of range 1-%d", stepStr, elem, span)
		}
		step = n
	}
	var lo, hi int
	switch {
	case rng == "*":
		lo, hi = f.lo, f.starHi
	case rng == "":
		return 0, fmt.Errorf("missing value in %q", elem)
	default:
		a, b, isRange := strings.Cut(rng, "-")
		if isRange && strings.Contains(b, "-") {
			return 0, fmt.Errorf("malformed range %q: more than one \"-\"", rng)
		}
		var err error
		if lo, err = f.value(a, elem); err != nil {
			return 0, err
		}
		switch {
		case isRange:
			if hi, err = f.value(b, elem); err != nil {
				return 0, err
			}
			if hi < lo {
				return 0, fmt.Errorf("range %q is backwards", rng)
			}
		case hasStep:
			hi = max(f.starHi, lo)
		default:
			hi = lo
		}
	}
	var set uint64
	for v := lo; v <= hi; v += step {
		set |= 1 << v
	}
	return set, nil
}

// value parses one number or name; elem is the element it came from, for
// errors.
func (f *field) value(s, elem string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing value in %q", elem)
	}
	if s == "*" {
		return 0, fmt.Errorf("\"*\" cannot be part of a range in %q", elem)
	}
	if isDigits(s) {
		n, err := strconv.Atoi(s)
		if err != nil || n < f.lo || n > f.hi {
			return 0, fmt.Errorf("%s is out of range %d-%d", s, f.lo, f.hi)
		}
		return n, nil
	}
	for i, name := range f.names {
		if strings.EqualFold(s, name) {
			return f.lo + i, nil
		}
	}
	switch f.name {
	case "month":
		return 0, fmt.Errorf("%q is not a number or month name (jan-dec)", s)
	case "day-of-week":
		return 0, fmt.Errorf("%q is not a number or day name (sun-sat)", s)
	}
	return 0, fmt.Errorf("%q is not a number", s)
}

// isDigits reports whether s is a non-empty run of ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Next returns the first time strictly after t (interpreted in UTC, result
// in UTC, seconds and below zero) that the schedule matches, or the zero
// time if there is none within five years (e.g. "0 0 30 2 *"): that is,
// none after t and no later than t plus five years.
//
// Next skips whole months, days and hours that cannot match, so it takes
// at most a few hundred steps however sparse the schedule.
func (s *Schedule) Next(t time.Time) time.Time {
	t = t.UTC()
	deadline := t.AddDate(horizon, 0, 0)
	start := t.Truncate(time.Minute).Add(time.Minute)

	y, mon, d := start.Date()
	m, h, mi := int(mon), start.Hour(), start.Minute()
	// days is the set of matching days of month m of year y, when
	// daysY and daysM are y and m.
	var days uint64
	daysY, daysM := 0, 0
	for y <= deadline.Year() {
		nm, ok := nextBit(s.month, m)
		if !ok {
			y, m, d, h, mi = y+1, 1, 1, 0, 0
			continue
		}
		if nm != m {
			m, d, h, mi = nm, 1, 0, 0
		}
		if y != daysY || m != daysM {
			days, daysY, daysM = s.days(y, m), y, m
		}
		nd, ok := nextBit(days, d)
		if !ok {
			m, d, h, mi = m+1, 1, 0, 0 // nextBit on month 13 moves to the next year
			continue
		}
		if nd != d {
			d, h, mi = nd, 0, 0
		}
		nh, ok := nextBit(s.hour, h)
		if !ok {
			d, h, mi = d+1, 0, 0 // past the month's last day, nextBit on days fails
			continue
		}
		if nh != h {
			h, mi = nh, 0
		}
		nmi, ok := nextBit(s.minute, mi)
		if !ok {
			h, mi = h+1, 0 // nextBit on hour 24 moves to the next day
			continue
		}
		next := time.Date(y, time.Month(m), d, h, nmi, 0, 0, time.UTC)
		if next.After(deadline) {
			break
		}
		return next
	}
	return time.Time{}
}

// days returns the set of days of month m of year y that the schedule
// matches, bit d for day d.
func (s *Schedule) days(y, m int) uint64 {
	n := daysIn(y, m)
	inMonth := uint64(1)<<(n+1) - 2 // bits 1..n
	// Day 1+k falls on weekday (w+k)%7: build the first week, bit 1+k,
	// and repeat it for the rest of the month.
	w := int(time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC).Weekday())
	var week uint64
	for k := range 7 {
		if s.dow&(1<<((w+k)%7)) != 0 {
			week |= 1 << (1 + k)
		}
	}
	byDow := week | week<<7 | week<<14 | week<<21 | week<<28
	if s.domStar || s.dowStar {
		return s.dom & byDow & inMonth
	}
	return (s.dom | byDow) & inMonth
}

// daysIn returns the number of days in month m of year y.
func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// nextBit returns the lowest set bit of set at or above from.
func nextBit(set uint64, from int) (int, bool) {
	if from >= 64 {
		return 0, false
	}
	set &^= 1<<from - 1
	if set == 0 {
		return 0, false
	}
	return bits.TrailingZeros64(set), true
}

// String returns the expression as parsed: exactly the string given to
// Parse.
func (s *Schedule) String() string {
	return s.expr
}
