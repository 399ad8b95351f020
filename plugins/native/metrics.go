package native

import (
	"math"
	"sort"
)

// Evaluation metrics, computed the way scikit-learn computes them so that
// figures compare across tools: precision, recall and F1 are those of the
// positive class (label 1) for two classes and macro-averaged over classes
// otherwise; ROC AUC is one-vs-rest and macro-averaged for more than two
// classes; log loss clips probabilities to [ε, 1-ε], ε the float64 machine
// epsilon.

// Accuracy returns the fraction of predictions equal to the labels.
func Accuracy(labels, predicted []int) float64 {
	if len(labels) == 0 {
		return math.NaN()
	}
	right := 0
	for i, y := range labels {
		if predicted[i] == y {
			right++
		}
	}
	return float64(right) / float64(len(labels))
}

// PrecisionRecallF1 returns precision, recall and F1 over classes labels
// 0..classes-1. A class never predicted has precision 0, one never present
// recall 0 (scikit-learn's zero_division=0).
func PrecisionRecallF1(labels, predicted []int, classes int) (precision, recall, f1 float64) {
	tp := make([]float64, classes)
	fp := make([]float64, classes)
	fn := make([]float64, classes)
	for i, y := range labels {
		p := predicted[i]
		if p == y {
			tp[y]++
		} else {
			fp[p]++
			fn[y]++
		}
	}
	one := func(c int) (float64, float64, float64) {
		var p, r, f float64
		if tp[c]+fp[c] > 0 {
			p = tp[c] / (tp[c] + fp[c])
		}
		if tp[c]+fn[c] > 0 {
			r = tp[c] / (tp[c] + fn[c])
		}
		if p+r > 0 {
			f = 2 * p * r / (p + r)
		}
		return p, r, f
	}
	if classes == 2 {
		return one(1)
	}
	for c := range classes {
		p, r, f := one(c)
		precision += p
		recall += r
		f1 += f
	}
	n := float64(classes)
	return precision / n, recall / n, f1 / n
}

// BinaryAUC returns the area under the ROC curve of scores for the
// positive labels (true), with ties counted half: the Mann-Whitney U
// statistic over the two groups. It is NaN when either group is empty.
func BinaryAUC(positive []bool, scores []float64) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	// Sum the (tie-averaged) ranks of the positives.
	var rankSum, pos float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		rank := float64(i+j+1) / 2 // ranks i+1..j, averaged
		for k := i; k < j; k++ {
			if positive[idx[k]] {
				rankSum += rank
				pos++
			}
		}
		i = j
	}
	neg := float64(len(scores)) - pos
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

// ROCAUC returns the ROC AUC of class probabilities proba (one row per
// sample, one column per class): of column 1 for two classes, and the
// macro average of one-vs-rest AUCs otherwise.
func ROCAUC(labels []int, proba [][]float64) float64 {
	classes := len(proba[0])
	auc := func(c int) float64 {
		pos := make([]bool, len(labels))
		scores := make([]float64, len(labels))
		for i, y := range labels {
			pos[i] = y == c
			scores[i] = proba[i][c]
		}
		return BinaryAUC(pos, scores)
	}
	if classes == 2 {
		return auc(1)
	}
	sum := 0.0
	for c := range classes {
		sum += auc(c)
	}
	return sum / float64(classes)
}

// LogLoss returns the mean negative log-likelihood of the labels under
// proba, each probability clipped to [ε, 1-ε] and each row renormalised,
// as scikit-learn does.
func LogLoss(labels []int, proba [][]float64) float64 {
	const eps = 0x1p-52 // float64's machine epsilon
	sum := 0.0
	for i, y := range labels {
		total := 0.0
		for _, p := range proba[i] {
			total += min(max(p, eps), 1-eps)
		}
		sum -= math.Log(min(max(proba[i][y], eps), 1-eps) / total)
	}
	return sum / float64(len(labels))
}

// RegressionMetrics returns the mean absolute error, the root mean squared
// error and the coefficient of determination R².
func RegressionMetrics(y, predicted []float64) (mae, rmse, r2 float64) {
	n := float64(len(y))
	mean := 0.0
	for _, v := range y {
		mean += v
	}
	mean /= n
	var abs, sq, tot float64
	for i, v := range y {
		d := v - predicted[i]
		abs += math.Abs(d)
		sq += d * d
		tot += (v - mean) * (v - mean)
	}
	r2 = 1 - sq/tot
	if tot == 0 {
		r2 = 0
		if sq == 0 {
			r2 = 1
		}
	}
	return abs / n, math.Sqrt(sq / n), r2
}

// argmax returns the index of the largest value, NaN aside: 0 when every
// value is NaN. (slices.Max is NaN when any value is, which slices.Index
// never finds.)
func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] || math.IsNaN(v[best]) && !math.IsNaN(x) {
			best = i
		}
	}
	return best
}
