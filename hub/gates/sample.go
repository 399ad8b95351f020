package gates

import "math"

// The latency histogram's layout, the same as the agent's metric windows:
// bucket i holds latencies up to LatencyBase·2^(i/4) seconds, from 25 µs
// to about 23 minutes, each bucket 19% wider than the one before; the last
// bucket also holds everything slower.
const (
	// LatencyBase is the upper bound of bucket 0, in seconds.
	LatencyBase = 25e-6
	// LatencyBuckets is the number of buckets.
	LatencyBuckets = 104
)

// LatencyBucket is the bucket a latency in seconds falls in: 0 up to
// LatencyBase, else ⌈4·log₂(seconds/LatencyBase)⌉, at most
// LatencyBuckets−1. A NaN or negative latency falls in bucket 0.
func LatencyBucket(seconds float64) int {
	if !(seconds > LatencyBase) { // also NaN
		return 0
	}
	if math.IsInf(seconds, 1) {
		return LatencyBuckets - 1
	}
	return min(int(math.Ceil(4*math.Log2(seconds/LatencyBase))), LatencyBuckets-1)
}

// LatencyUpper is the upper bound of bucket i in seconds: LatencyBase·2^(i/4).
// Buckets outside [0, LatencyBuckets) are taken as the nearest one.
func LatencyUpper(i int) float64 {
	return LatencyBase * math.Exp2(float64(clampBucket(i))/4)
}

// clampBucket maps a bucket index into the histogram's range, so that a
// malformed histogram is read rather than refused.
func clampBucket(i int) int { return min(max(i, 0), LatencyBuckets-1) }

// Sample is what one group of agents (the canary group or the baseline
// group) measured over the span being judged. Counts are totals over the
// group; the ratios that may be missing are pointers, nil when unknown
// (never 0).
type Sample struct {
	// Requests counts inference requests.
	Requests uint64 `json:"requests"`
	// Errors counts the requests the agent or the model failed (5xx), not
	// those refused as the caller's fault.
	Errors uint64 `json:"errors"`
	// Latency counts answered requests per latency bucket (see
	// LatencyBucket), as {bucket: count}. Buckets outside [0,
	// LatencyBuckets) are read as the nearest bucket.
	Latency map[int]uint64 `json:"latency,omitempty"`
	// DriftShare is the share of features judged drifted, in [0, 1].
	DriftShare *float64 `json:"drift_share,omitempty"`
	// FeatureDrift is each feature's drift score: a p-value or a distance,
	// by the feature's drift method (see Gate.Max and Gate.Min).
	FeatureDrift map[string]float64 `json:"feature_drift,omitempty"`
	// Accuracy is the share of labelled predictions that were right, over
	// AccuracyRows rows; nil until feedback labels arrive.
	Accuracy *float64 `json:"accuracy,omitempty"`
	// AccuracyRows counts the predictions with a feedback label, which
	// Accuracy and LogLoss are measured over.
	AccuracyRows uint64 `json:"accuracy_rows,omitempty"`
	// LogLoss is the mean log loss over AccuracyRows labelled rows.
	LogLoss *float64 `json:"log_loss,omitempty"`
	// GPUUnhealthy counts the group's agents with an unhealthy GPU.
	GPUUnhealthy uint64 `json:"gpu_unhealthy"`
	// Agents counts the group's agents.
	Agents uint64 `json:"agents"`
	// ShadowAgreement is the share of ShadowRows shadowed rows on which the
	// new version agreed with the serving one.
	ShadowAgreement *float64 `json:"shadow_agreement,omitempty"`
	// ShadowRows counts the shadowed rows.
	ShadowRows uint64 `json:"shadow_rows,omitempty"`
}

// answered is the number of requests in the latency histogram.
func (s Sample) answered() uint64 {
	var n uint64
	for _, c := range s.Latency {
		n += c
	}
	return n
}

// histogram is the latency histogram as a dense array, buckets outside the
// range folded into the nearest.
func (s Sample) histogram() [LatencyBuckets]float64 {
	var h [LatencyBuckets]float64
	for b, c := range s.Latency {
		h[clampBucket(b)] += float64(c)
	}
	return h
}

// LatencyQuantile estimates the q-quantile (0 < q ≤ 1) of answered
// requests' latency in seconds: the upper bound of the bucket the
// ⌈q·n⌉-th fastest of n answered requests falls in. Zero when there are no
// answered requests; q is clamped into (0, 1] (a NaN q gives 0).
func (s Sample) LatencyQuantile(q float64) float64 {
	h := s.histogram()
	var total float64
	for _, c := range h {
		total += c
	}
	if total == 0 || math.IsNaN(q) {
		return 0
	}
	rank := max(1, math.Ceil(min(q, 1)*total))
	var seen float64
	for b, c := range h {
		if seen += c; c > 0 && seen >= rank {
			return LatencyUpper(b)
		}
	}
	return LatencyUpper(LatencyBuckets - 1)
}

// Add merges another group's sample into s, as if both groups had been one.
// Counts and histograms add. The ratios combine as means weighted by the
// rows they were measured over: Accuracy and LogLoss by AccuracyRows,
// ShadowAgreement by ShadowRows, DriftShare and each FeatureDrift score by
// Requests (where both weights are zero, equally). A ratio known on one
// side only is taken from that side. Averaging drift shares and scores is
// an approximation: the exact figure of merged groups comes from merging
// their drift windows and judging the merge, which the caller should set
// instead where it can.
func (s *Sample) Add(o Sample) {
	s.DriftShare = mergeRatio(s.DriftShare, s.Requests, o.DriftShare, o.Requests)
	if len(o.FeatureDrift) > 0 {
		merged := make(map[string]float64, len(s.FeatureDrift)+len(o.FeatureDrift))
		for f, v := range s.FeatureDrift {
			merged[f] = v
		}
		for f, v := range o.FeatureDrift {
			if mine, ok := s.FeatureDrift[f]; ok {
				v = *mergeRatio(&mine, s.Requests, &v, o.Requests)
			}
			merged[f] = v
		}
		s.FeatureDrift = merged
	}
	s.Accuracy = mergeRatio(s.Accuracy, s.AccuracyRows, o.Accuracy, o.AccuracyRows)
	s.LogLoss = mergeRatio(s.LogLoss, s.AccuracyRows, o.LogLoss, o.AccuracyRows)
	s.ShadowAgreement = mergeRatio(s.ShadowAgreement, s.ShadowRows, o.ShadowAgreement, o.ShadowRows)

	s.Requests += o.Requests
	s.Errors += o.Errors
	if len(o.Latency) > 0 {
		if s.Latency == nil {
			s.Latency = make(map[int]uint64, len(o.Latency))
		}
		for b, c := range o.Latency {
			s.Latency[b] += c
		}
	}
	s.AccuracyRows += o.AccuracyRows
	s.GPUUnhealthy += o.GPUUnhealthy
	s.Agents += o.Agents
	s.ShadowRows += o.ShadowRows
}

// mergeRatio is the mean of two ratios weighted by their rows, as a new
// pointer (never one of its arguments, so that merged samples share
// nothing).
func mergeRatio(a *float64, an uint64, b *float64, bn uint64) *float64 {
	var v float64
	switch {
	case a == nil && b == nil:
		return nil
	case b == nil:
		v = *a
	case a == nil:
		v = *b
	case an == 0 && bn == 0:
		v = (*a + *b) / 2
	default:
		wa, wb := float64(an), float64(bn)
		v = (*a*wa + *b*wb) / (wa + wb)
	}
	return &v
}
