// Package sketch summarises feature values for drift detection with
// mergeable structures: a KLL quantile sketch with a provable rank error
// (Quantiles), numeric summaries with frozen bins (Numeric), capped
// category counts (Categorical), reference profiles built from training
// data (BuildProfile), live windows measured against a profile (Window),
// and drift evaluation from those summaries alone (Evaluate).
//
// Every structure merges: the summary of two disjoint sets of rows merged
// equals (exactly, or for sketches within their error bound) the summary
// of their union, so agents summarise minute windows of traffic and the
// hub merges them across agents and time. Sketch-based statistics carry
// their error: Evaluate widens the KS test by both sketches' rank error
// bounds, so an unchanged stream raises no more false alarms than the
// p-value threshold allows.
package sketch
