package cron

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bitset returns the set holding vals.
func bitset(vals ...int) uint64 {
	var s uint64
	for _, v := range vals {
		s |= 1 << v
	}
	return s
}

// span returns the set holding lo to hi, every step-th.
func span(lo, hi, step int) uint64 {
	var s uint64
	for v := lo; v <= hi; v += step {
		s |= 1 << v
	}
	return s
}

var (
	allMinutes = span(0, 59, 1)
	allHours   = span(0, 23, 1)
	allDoms    = span(1, 31, 1)
	allMonths  = span(1, 12, 1)
	allDows    = span(0, 6, 1)
)

func TestParse(t *testing.T) {
	tests := []struct {
		expr string
		want Schedule // expr is not compared
	}{
		{"* * * * *", Schedule{minute: allMinutes, hour: allHours, dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
		{"5 4 3 2 1", Schedule{minute: bitset(5), hour: bitset(4), dom: bitset(3), month: bitset(2), dow: bitset(1)}},
		{"0 0 1 1 0", Schedule{minute: bitset(0), hour: bitset(0), dom: bitset(1), month: bitset(1), dow: bitset(0)}},
		{"59 23 31 12 6", Schedule{minute: bitset(59), hour: bitset(23), dom: bitset(31), month: bitset(12), dow: bitset(6)}},
		{"05 007 09 * *", Schedule{minute: bitset(5), hour: bitset(7), dom: bitset(9), month: allMonths, dow: allDows, dowStar: true}},
		// Ranges.
		{"1-5 9-17 10-20 3-4 1-5", Schedule{minute: span(1, 5, 1), hour: span(9, 17, 1), dom: span(10, 20, 1), month: bitset(3, 4), dow: span(1, 5, 1)}},
		{"7-7 0-23 1-31 1-12 0-6", Schedule{minute: bitset(7), hour: allHours, dom: allDoms, month: allMonths, dow: allDows}},
		// Steps.
		{"*/15 */6 */10 */3 */2", Schedule{minute: bitset(0, 15, 30, 45), hour: bitset(0, 6, 12, 18), dom: bitset(1, 11, 21, 31), month: bitset(1, 4, 7, 10), dow: bitset(0, 2, 4, 6), domStar: true, dowStar: true}},
		{"10-30/10 1-10/4 5-9/2 2-11/3 1-5/2", Schedule{minute: bitset(10, 20, 30), hour: bitset(1, 5, 9), dom: bitset(5, 7, 9), month: bitset(2, 5, 8, 11), dow: bitset(1, 3, 5)}},
		{"50/3 20/1 28/2 11/1 1/2", Schedule{minute: bitset(50, 53, 56, 59), hour: bitset(20, 21, 22, 23), dom: bitset(28, 30), month: bitset(11, 12), dow: bitset(1, 3, 5)}},
		{"*/60 */24 */31 */12 */7", Schedule{minute: bitset(0), hour: bitset(0), dom: bitset(1), month: bitset(1), dow: bitset(0), domStar: true, dowStar: true}},
		{"*/1 * * * *", Schedule{minute: allMinutes, hour: allHours, dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
		// Lists.
		{"0,15,30-32 1,2 1,15,31 1,6-7 0,3", Schedule{minute: bitset(0, 15, 30, 31, 32), hour: bitset(1, 2), dom: bitset(1, 15, 31), month: bitset(1, 6, 7), dow: bitset(0, 3)}},
		{"1,1,1 */12,5 * * *", Schedule{minute: bitset(1), hour: bitset(0, 5, 12), dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
		// Names, in any case, wherever a number may go.
		{"0 0 * jan-mar mon-fri", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: bitset(1, 2, 3), dow: span(1, 5, 1), domStar: true}},
		{"0 0 * JAN,Dec,jun Sun,SAT", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: bitset(1, 6, 12), dow: bitset(0, 6), domStar: true}},
		{"0 0 * feb-12/2 tue/2", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: bitset(2, 4, 6, 8, 10, 12), dow: bitset(2, 4, 6), domStar: true}},
		{"0 0 * apr,may,aug,sep,oct,nov mon,wed,thu", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: bitset(4, 5, 8, 9, 10, 11), dow: bitset(1, 3, 4), domStar: true}},
		// Sunday is both 0 and 7.
		{"0 0 * * 7", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: bitset(0), domStar: true}},
		{"0 0 * * 5-7", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: bitset(0, 5, 6), domStar: true}},
		{"0 0 * * 0,7", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: bitset(0), domStar: true}},
		{"0 0 * * 0-7", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: allDows, domStar: true}},
		{"0 0 * * 7/3", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: bitset(0), domStar: true}},
		// Whitespace between and around fields.
		{"  0\t12  *   *  *  ", Schedule{minute: bitset(0), hour: bitset(12), dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
		// A field starting with "*" counts as unrestricted for the day rule
		// even when it is a step.
		{"0 0 */2 * 1", Schedule{minute: bitset(0), hour: bitset(0), dom: span(1, 31, 2), month: allMonths, dow: bitset(1), domStar: true}},
		{"0 0 1-31 * 0-6", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: allDows}},
		// Descriptors.
		{"@yearly", Schedule{minute: bitset(0), hour: bitset(0), dom: bitset(1), month: bitset(1), dow: allDows, dowStar: true}},
		{"@annually", Schedule{minute: bitset(0), hour: bitset(0), dom: bitset(1), month: bitset(1), dow: allDows, dowStar: true}},
		{"@monthly", Schedule{minute: bitset(0), hour: bitset(0), dom: bitset(1), month: allMonths, dow: allDows, dowStar: true}},
		{"@weekly", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: bitset(0), domStar: true}},
		{"@daily", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
		{"@midnight", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
		{"@hourly", Schedule{minute: bitset(0), hour: allHours, dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
		{" @Daily ", Schedule{minute: bitset(0), hour: bitset(0), dom: allDoms, month: allMonths, dow: allDows, domStar: true, dowStar: true}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := Parse(tt.expr)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := *s
			got.expr = ""
			if got != tt.want {
				t.Errorf("Parse(%q):\n got %s\nwant %s", tt.expr, dump(&got), dump(&tt.want))
			}
			if s.String() != tt.expr {
				t.Errorf("String() = %q, want %q", s.String(), tt.expr)
			}
		})
	}
}

// dump shows a schedule's sets as lists of values.
func dump(s *Schedule) string {
	list := func(set uint64) string {
		var vs []string
		for v := range 64 {
			if set&(1<<v) != 0 {
				vs = append(vs, strconv.Itoa(v))
			}
		}
		return "[" + strings.Join(vs, ",") + "]"
	}
	return fmt.Sprintf("minute %s hour %s dom %s month %s dow %s domStar %v dowStar %v",
		list(s.minute), list(s.hour), list(s.dom), list(s.month), list(s.dow), s.domStar, s.dowStar)
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		expr, want string
	}{
		// The expression as a whole.
		{"", `cron "": empty expression`},
		{"   \t ", `cron "   \t ": empty expression`},
		{"* * * *", `cron "* * * *": want 5 fields (minute hour day-of-month month day-of-week), have 4`},
		{"* * * * * *", `cron "* * * * * *": want 5 fields (minute hour day-of-month month day-of-week), have 6`},
		{"0", `cron "0": want 5 fields (minute hour day-of-month month day-of-week), have 1`},
		{"@reboot", `cron "@reboot": unknown descriptor "@reboot" (want @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)`},
		{"@every 5m", `cron "@every 5m": unknown descriptor "@every" (want @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)`},
		{"@", `cron "@": unknown descriptor "@" (want @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)`},
		{"@daily 0 0 * * *", `cron "@daily 0 0 * * *": descriptor @daily takes no fields, have "0 0 * * *" after it`},
		// Out of range, in every field, at both ends.
		{"60 * * * *", `cron "60 * * * *": minute: 60 is out of range 0-59`},
		{"0 25 * * *", `cron "0 25 * * *": hour: 25 is out of range 0-23`},
		{"0 24 * * *", `cron "0 24 * * *": hour: 24 is out of range 0-23`},
		{"0 0 0 * *", `cron "0 0 0 * *": day-of-month: 0 is out of range 1-31`},
		{"0 0 32 * *", `cron "0 0 32 * *": day-of-month: 32 is out of range 1-31`},
		{"0 0 * 0 *", `cron "0 0 * 0 *": month: 0 is out of range 1-12`},
		{"0 0 * 13 *", `cron "0 0 * 13 *": month: 13 is out of range 1-12`},
		{"0 0 * * 8", `cron "0 0 * * 8": day-of-week: 8 is out of range 0-7`},
		{"0-60 * * * *", `cron "0-60 * * * *": minute: 60 is out of range 0-59`},
		{"99999999999999999999 * * * *", `cron "99999999999999999999 * * * *": minute: 99999999999999999999 is out of range 0-59`},
		{"1,2,61 * * * *", `cron "1,2,61 * * * *": minute: 61 is out of range 0-59`},
		// Steps.
		{"*/0 * * * *", `cron "*/0 * * * *": minute: step 0 in "*/0" is out of range 1-60`},
		{"0 1-5/0 * * *", `cron "0 1-5/0 * * *": hour: step 0 in "1-5/0" is out of range 1-24`},
		{"*/61 * * * *", `cron "*/61 * * * *": minute: step 61 in "*/61" is out of range 1-60`},
		{"0 0 * * */8", `cron "0 0 * * */8": day-of-week: step 8 in "*/8" is out of range 1-7`},
		{"*/99999999999999999999 * * * *", `cron "*/99999999999999999999 * * * *": minute: step 99999999999999999999 in "*/99999999999999999999" is out of range 1-60`},
		{"*/ * * * *", `cron "*/ * * * *": minute: step "" in "*/" is not a number`},
		{"*/x * * * *", `cron "*/x * * * *": minute: step "x" in "*/x" is not a number`},
		{"*/-1 * * * *", `cron "*/-1 * * * *": minute: step "-1" in "*/-1" is not a number`},
		{"*/+1 * * * *", `cron "*/+1 * * * *": minute: step "+1" in "*/+1" is not a number`},
		{"*/2/3 * * * *", `cron "*/2/3 * * * *": minute: malformed step in "*/2/3": more than one "/"`},
		{"/5 * * * *", `cron "/5 * * * *": minute: missing value in "/5"`},
		// Ranges.
		{"0 5-2 * * *", `cron "0 5-2 * * *": hour: range "5-2" is backwards`},
		{"0 0 * dec-jan *", `cron "0 0 * dec-jan *": month: range "dec-jan" is backwards`},
		{"0 0 * * fri-sun", `cron "0 0 * * fri-sun": day-of-week: range "fri-sun" is backwards`},
		{"1-2-3 * * * *", `cron "1-2-3 * * * *": minute: malformed range "1-2-3": more than one "-"`},
		{"1- * * * *", `cron "1- * * * *": minute: missing value in "1-"`},
		{"-1 * * * *", `cron "-1 * * * *": minute: missing value in "-1"`},
		{"*-5 * * * *", `cron "*-5 * * * *": minute: "*" cannot be part of a range in "*-5"`},
		{"1-* * * * *", `cron "1-* * * * *": minute: "*" cannot be part of a range in "1-*"`},
		// Lists.
		{"1,,2 * * * *", `cron "1,,2 * * * *": minute: empty element in list "1,,2"`},
		{"1, * * * *", `cron "1, * * * *": minute: empty element in list "1,"`},
		{",1 * * * *", `cron ",1 * * * *": minute: empty element in list ",1"`},
		// Names and other garbage.
		{"0 0 * foo *", `cron "0 0 * foo *": month: "foo" is not a number or month name (jan-dec)`},
		{"0 0 * january *", `cron "0 0 * january *": month: "january" is not a number or month name (jan-dec)`},
		{"0 0 * * monday", `cron "0 0 * * monday": day-of-week: "monday" is not a number or day name (sun-sat)`},
		{"0 0 * * mon-xyz", `cron "0 0 * * mon-xyz": day-of-week: "xyz" is not a number or day name (sun-sat)`},
		{"0 0 * mon *", `cron "0 0 * mon *": month: "mon" is not a number or month name (jan-dec)`},
		{"0 0 * * jan", `cron "0 0 * * jan": day-of-week: "jan" is not a number or day name (sun-sat)`},
		{"0 0 jan * *", `cron "0 0 jan * *": day-of-month: "jan" is not a number`},
		{"5x * * * *", `cron "5x * * * *": minute: "5x" is not a number`},
		{"0 1.5 * * *", `cron "0 1.5 * * *": hour: "1.5" is not a number`},
		{"0 +1 * * *", `cron "0 +1 * * *": hour: "+1" is not a number`},
		{"** * * * *", `cron "** * * * *": minute: "**" is not a number`},
		{"? * * * *", `cron "? * * * *": minute: "?" is not a number`},
		{"0 0 L * *", `cron "0 0 L * *": day-of-month: "L" is not a number`},
		{"0 0 * * 1#2", `cron "0 0 * * 1#2": day-of-week: "1#2" is not a number or day name (sun-sat)`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := Parse(tt.expr)
			if err == nil {
				t.Fatalf("Parse(%q) = %s, want error %q", tt.expr, dump(s), tt.want)
			}
			if s != nil {
				t.Errorf("Parse(%q) returned a schedule with its error", tt.expr)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse(%q) error\n got %s\nwant %s", tt.expr, err, tt.want)
			}
		})
	}
}

// utc is shorthand for a UTC time to the minute.
func utc(y int, m time.Month, d, h, mi int) time.Time {
	return time.Date(y, m, d, h, mi, 0, 0, time.UTC)
}

func TestNext(t *testing.T) {
	plus5 := time.FixedZone("UTC+5", 5*60*60)
	tests := []struct {
		name string
		expr string
		from time.Time
		want time.Time // zero for none
	}{
		// Strictly after, and seconds and below dropped.
		{"every minute", "* * * * *", utc(2024, 5, 6, 10, 0), utc(2024, 5, 6, 10, 1)},
		{"every minute mid-minute", "* * * * *", time.Date(2024, 5, 6, 10, 0, 30, 500, time.UTC), utc(2024, 5, 6, 10, 1)},
		{"every minute last nanosecond", "* * * * *", time.Date(2024, 5, 6, 10, 0, 59, 999999999, time.UTC), utc(2024, 5, 6, 10, 1)},
		{"on a match", "30 10 * * *", utc(2024, 5, 6, 10, 30), utc(2024, 5, 7, 10, 30)},
		{"just before a match", "30 10 * * *", time.Date(2024, 5, 6, 10, 29, 59, 999999999, time.UTC), utc(2024, 5, 6, 10, 30)},
		{"just after a match", "30 10 * * *", time.Date(2024, 5, 6, 10, 30, 0, 1, time.UTC), utc(2024, 5, 7, 10, 30)},
		{"on a yearly match", "@yearly", utc(2024, 1, 1, 0, 0), utc(2025, 1, 1, 0, 0)},
		// Steps and ranges within the hour and day.
		{"step", "*/15 * * * *", utc(2024, 5, 6, 10, 46), utc(2024, 5, 6, 11, 0)},
		{"step from", "5/20 * * * *", utc(2024, 5, 6, 10, 46), utc(2024, 5, 6, 11, 5)},
		{"range step", "10-40/15 * * * *", utc(2024, 5, 6, 10, 41), utc(2024, 5, 6, 11, 10)},
		{"work hours", "*/30 9-17 * * mon-fri", utc(2024, 5, 6, 17, 30), utc(2024, 5, 7, 9, 0)},
		{"work hours friday", "*/30 9-17 * * mon-fri", utc(2024, 5, 10, 17, 45), utc(2024, 5, 13, 9, 0)},
		// Month and year boundaries.
		{"next day across month", "30 23 * * *", utc(2024, 1, 31, 23, 30), utc(2024, 2, 1, 23, 30)},
		{"across year", "0 0 1 1 *", time.Date(2024, 12, 31, 23, 59, 59, 0, time.UTC), utc(2025, 1, 1, 0, 0)},
		{"last minute of the year", "59 23 31 12 *", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)},
		{"31st skips short months", "0 0 31 * *", utc(2024, 4, 15, 0, 0), utc(2024, 5, 31, 0, 0)},
		{"31st from the 31st", "0 0 31 * *", utc(2024, 5, 31, 0, 0), utc(2024, 7, 31, 0, 0)},
		{"31st across year", "0 0 31 * *", utc(2024, 12, 31, 0, 0), utc(2025, 1, 31, 0, 0)},
		{"30th skips february", "0 12 30 * *", utc(2023, 1, 30, 12, 0), utc(2023, 3, 30, 12, 0)},
		{"month list", "0 0 1 mar,sep *", utc(2024, 3, 1, 0, 0), utc(2024, 9, 1, 0, 0)},
		{"month list across year", "0 0 1 mar,sep *", utc(2024, 9, 1, 0, 0), utc(2025, 3, 1, 0, 0)},
		{"hour wraps to next month", "0 3 * * *", utc(2024, 2, 29, 4, 0), utc(2024, 3, 1, 3, 0)},
		{"quarterly", "0 6 1 */3 *", utc(2024, 10, 1, 6, 0), utc(2025, 1, 1, 6, 0)},
		// February 29.
		{"leap day", "0 0 29 2 *", utc(2023, 1, 1, 0, 0), utc(2024, 2, 29, 0, 0)},
		{"leap day from leap day", "0 0 29 2 *", utc(2024, 2, 29, 0, 0), utc(2028, 2, 29, 0, 0)},
		{"leap day from after it", "0 0 29 2 *", utc(2024, 3, 1, 0, 0), utc(2028, 2, 29, 0, 0)},
		{"leap day 2000 divisible by 400", "0 0 29 2 *", utc(1999, 6, 1, 0, 0), utc(2000, 2, 29, 0, 0)},
		{"leap day skips 2100", "0 0 29 2 *", utc(2099, 3, 1, 0, 0), utc(2104, 2, 29, 0, 0)},
		{"leap day beyond five years", "0 0 29 2 *", utc(2096, 3, 1, 0, 0), time.Time{}},
		{"leap day just beyond five years", "0 0 29 2 *", utc(2099, 2, 28, 23, 59), time.Time{}},
		{"leap day or monday", "0 0 29 2 mon", utc(2023, 2, 26, 0, 0), utc(2023, 2, 27, 0, 0)},
		{"last of february", "0 0 28-29 2 *", utc(2023, 2, 28, 0, 0), utc(2024, 2, 28, 0, 0)},
		// Day-of-month and day-of-week: OR when both are restricted.
		// 2024-01-01 is a Monday; the 5th, 12th, 19th and 26th are Fridays.
		{"or: friday first", "0 0 13 * fri", utc(2024, 1, 1, 0, 0), utc(2024, 1, 5, 0, 0)},
		{"or: next friday", "0 0 13 * fri", utc(2024, 1, 5, 0, 0), utc(2024, 1, 12, 0, 0)},
		{"or: the 13th, a saturday", "0 0 13 * fri", utc(2024, 1, 12, 0, 0), utc(2024, 1, 13, 0, 0)},
		{"or: first of month or monday", "0 0 1 * 1", utc(2024, 1, 29, 0, 0), utc(2024, 2, 1, 0, 0)},
		{"or: range and name", "0 0 1-7 * sun", utc(2024, 1, 7, 0, 0), utc(2024, 1, 14, 0, 0)},
		{"or: full range is still restricted", "0 0 1-31 * mon", utc(2024, 1, 1, 0, 0), utc(2024, 1, 2, 0, 0)},
		// AND when either starts with "*".
		{"and: dow star", "0 0 13 * *", utc(2024, 1, 1, 0, 0), utc(2024, 1, 13, 0, 0)},
		{"and: dow star step", "0 0 13 * */1", utc(2024, 1, 1, 0, 0), utc(2024, 1, 13, 0, 0)},
		{"and: dom star", "0 0 * * fri", utc(2024, 1, 5, 0, 0), utc(2024, 1, 12, 0, 0)},
		{"and: dom star step", "0 0 */2 * fri", utc(2024, 1, 6, 0, 0), utc(2024, 1, 19, 0, 0)},
		{"and: dom star step across month", "0 0 */2 * fri", utc(2024, 1, 19, 0, 0), utc(2024, 2, 9, 0, 0)},
		// Days of the week.
		{"monday from a monday", "0 0 * * mon", utc(2024, 1, 1, 0, 0), utc(2024, 1, 8, 0, 0)},
		{"sunday as 7", "0 12 * * 7", utc(2024, 1, 1, 0, 0), utc(2024, 1, 7, 12, 0)},
		{"sunday as 0", "0 12 * * 0", utc(2024, 1, 1, 0, 0), utc(2024, 1, 7, 12, 0)},
		{"weekend across year", "0 9 * * sat,sun", utc(2024, 12, 29, 9, 0), utc(2025, 1, 4, 9, 0)},
		// Descriptors.
		{"@yearly", "@yearly", utc(2024, 6, 1, 0, 0), utc(2025, 1, 1, 0, 0)},
		{"@annually", "@annually", utc(2024, 6, 1, 0, 0), utc(2025, 1, 1, 0, 0)},
		{"@monthly", "@monthly", utc(2024, 1, 15, 0, 0), utc(2024, 2, 1, 0, 0)},
		{"@monthly december", "@monthly", utc(2024, 12, 1, 0, 0), utc(2025, 1, 1, 0, 0)},
		{"@weekly", "@weekly", utc(2024, 1, 1, 0, 0), utc(2024, 1, 7, 0, 0)},
		{"@weekly on sunday", "@weekly", utc(2024, 1, 7, 0, 0), utc(2024, 1, 14, 0, 0)},
		{"@daily", "@daily", utc(2024, 2, 28, 13, 0), utc(2024, 2, 29, 0, 0)},
		{"@midnight", "@midnight", utc(2024, 2, 29, 0, 0), utc(2024, 3, 1, 0, 0)},
		{"@hourly", "@hourly", utc(2024, 12, 31, 23, 0), utc(2025, 1, 1, 0, 0)},
		// No match.
		{"february 30", "0 0 30 2 *", utc(2024, 1, 1, 0, 0), time.Time{}},
		{"february 31", "0 0 31 feb *", utc(2024, 1, 1, 0, 0), time.Time{}},
		{"31st of short months", "0 0 31 4,6,9,11 *", utc(2024, 1, 1, 0, 0), time.Time{}},
		// The five-year horizon is inclusive.
		{"exactly five years", "0 0 1 1 *", utc(2020, 1, 1, 0, 0).Add(-time.Nanosecond), utc(2020, 1, 1, 0, 0)},
		{"horizon inclusive", "0 0 29 2 *", utc(2099, 3, 1, 0, 0), utc(2104, 2, 29, 0, 0)},
		// Times in other zones are taken in UTC.
		{"other zone", "0 21 * * *", time.Date(2024, 1, 1, 1, 30, 0, 0, plus5), utc(2023, 12, 31, 21, 0)},
		{"other zone day", "0 0 1 * *", time.Date(2024, 1, 1, 3, 0, 0, 0, plus5), utc(2024, 1, 1, 0, 0)},
		// Extremes of time.Time.
		{"zero time", "* * * * *", time.Time{}, utc(1, 1, 1, 0, 1)},
		{"year 9999", "0 0 1 1 *", utc(9998, 6, 1, 0, 0), utc(9999, 1, 1, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			got := s.Next(tt.from)
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("Parse(%q).Next(%s) = %s, want %s", tt.expr, tt.from, got, tt.want)
			}
		})
	}
}

// TestNextStrictlyAfter walks a schedule from match to match: each call,
// given the previous match, must return a later one.
func TestNextStrictlyAfter(t *testing.T) {
	s, err := Parse("0,30 */6 * * *")
	if err != nil {
		t.Fatal(err)
	}
	got := []time.Time{}
	for at := utc(2024, 12, 31, 11, 0); len(got) < 6; {
		at = s.Next(at)
		got = append(got, at)
	}
	want := []time.Time{
		utc(2024, 12, 31, 12, 0), utc(2024, 12, 31, 12, 30),
		utc(2024, 12, 31, 18, 0), utc(2024, 12, 31, 18, 30),
		utc(2025, 1, 1, 0, 0), utc(2025, 1, 1, 0, 30),
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("match %d = %s, want %s", i, got[i], want[i])
		}
	}
}

func TestNextDoesNotAllocate(t *testing.T) {
	s, err := Parse("0 0 29 2 *")
	if err != nil {
		t.Fatal(err)
	}
	at := utc(2024, 3, 1, 0, 0)
	if n := testing.AllocsPerRun(100, func() { s.Next(at) }); n != 0 {
		t.Errorf("Next allocates %v times per call", n)
	}
}

// randField is a randomly generated field: its text, and the values it
// matches worked out here independently of the parser.
type randField struct {
	text string
	vals [64]bool
}

// genField generates a random list for field f, drawing from every form of
// element and writing values as names some of the time.
func genField(r *rand.Rand, f field) randField {
	var rf randField
	val := func(v int) string {
		if i := v - f.lo; i < len(f.names) && r.IntN(3) == 0 {
			name := f.names[i]
			if r.IntN(2) == 0 {
				name = strings.ToUpper(name[:1]) + name[1:]
			}
			return name
		}
		return strconv.Itoa(v)
	}
	// pick returns any value the field accepts.
	pick := func() int { return f.lo + r.IntN(f.hi-f.lo+1) }
	add := func(lo, hi, step int) {
		for v := lo; v <= hi; v += step {
			rf.vals[v] = true
		}
	}
	spanN := f.starHi - f.lo + 1
	step := func() int {
		if r.IntN(2) == 0 {
			return 1 + r.IntN(4)
		}
		return 1 + r.IntN(spanN)
	}
	var elems []string
	for n := 1 + r.IntN(3); len(elems) < n; {
		switch r.IntN(7) {
		case 0:
			elems = append(elems, "*")
			add(f.lo, f.starHi, 1)
		case 1:
			n := step()
			elems = append(elems, "*/"+strconv.Itoa(n))
			add(f.lo, f.starHi, n)
		case 2, 3:
			v := pick()
			elems = append(elems, val(v))
			add(v, v, 1)
		case 4:
			a, b := pick(), pick()
			a, b = min(a, b), max(a, b)
			elems = append(elems, val(a)+"-"+val(b))
			add(a, b, 1)
		case 5:
			a, b, n := pick(), pick(), step()
			a, b = min(a, b), max(a, b)
			elems = append(elems, val(a)+"-"+val(b)+"/"+strconv.Itoa(n))
			add(a, b, n)
		case 6:
			a, n := pick(), step()
			elems = append(elems, val(a)+"/"+strconv.Itoa(n))
			add(a, max(a, f.starHi), n)
		}
	}
	rf.text = strings.Join(elems, ",")
	return rf
}

// bruteNext finds the first match after t by trying every minute up to
// limit, using plain time.Time arithmetic and the generated fields.
func bruteNext(fs [5]randField, t, limit time.Time) (time.Time, bool) {
	domStar := strings.HasPrefix(fs[2].text, "*")
	dowStar := strings.HasPrefix(fs[4].text, "*")
	for at := t.UTC().Truncate(time.Minute).Add(time.Minute); !at.After(limit); at = at.Add(time.Minute) {
		_, m, d := at.Date()
		wd := int(at.Weekday())
		if !fs[0].vals[at.Minute()] || !fs[1].vals[at.Hour()] || !fs[3].vals[m] {
			continue
		}
		domOK := fs[2].vals[d]
		dowOK := fs[4].vals[wd] || wd == 0 && fs[4].vals[7]
		if domStar || dowStar {
			if domOK && dowOK {
				return at, true
			}
		} else if domOK || dowOK {
			return at, true
		}
	}
	return time.Time{}, false
}

// TestNextMatchesBruteForce compares Next with a minute-by-minute search
// over random schedules and times.
func TestNextMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(20240229, 1))
	const window = 62 * 24 * time.Hour // how far the brute force looks
	schedules, found, none := 800, 0, 0
	if testing.Short() {
		schedules = 100
	}
	base := utc(1995, 1, 1, 0, 0)
	for range schedules {
		var fs [5]randField
		texts := make([]string, len(fs))
		for i := range fs {
			fs[i] = genField(r, fields[i])
			texts[i] = fs[i].text
		}
		expr := strings.Join(texts, " ")
		s, err := Parse(expr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", expr, err)
		}
		// A random start anywhere in a century, sometimes on the minute;
		// then follow the schedule from match to match.
		at := base.Add(time.Duration(r.Int64N(int64(100 * 365 * 24 * time.Hour))))
		if r.IntN(4) == 0 {
			at = at.Truncate(time.Minute)
		}
		for range 3 {
			limit := at.Add(window)
			want, ok := bruteNext(fs, at, limit)
			got := s.Next(at)
			if !ok {
				none++
				if !got.IsZero() && !got.After(limit) {
					t.Errorf("Parse(%q).Next(%s) = %s, but brute force finds no match by %s", expr, at, got, limit)
				}
				break
			}
			found++
			if !got.Equal(want) {
				t.Fatalf("Parse(%q).Next(%s) = %s, brute force finds %s", expr, at, got, want)
			}
			at = got
		}
	}
	t.Logf("%d matches compared; %d searches found none within %s", found, none, window)
	if found < schedules {
		t.Errorf("only %d matches compared: the generator makes too few schedules that match", found)
	}
}

func BenchmarkNext(b *testing.B) {
	for _, expr := range []string{
		"* * * * *",
		"*/5 9-17 * * mon-fri",
		"0 0 13 * fri",
		"0 0 29 2 *",
		"0 0 30 2 *",
	} {
		b.Run(expr, func(b *testing.B) {
			s, err := Parse(expr)
			if err != nil {
				b.Fatal(err)
			}
			at := utc(2024, 3, 1, 0, 0)
			for b.Loop() {
				s.Next(at)
			}
		})
	}
}
