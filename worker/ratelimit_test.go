package worker

import (
	"testing"

	"golang.org/x/time/rate"
)

func TestLimiterHalvesOn429(t *testing.T) {
	tests := []struct {
		name    string
		ceiling float64
		n429    int
		want    rate.Limit
	}{
		{"configured rate halves", 8, 1, 4},
		{"twice", 8, 2, 2},
		{"never below the floor", 8, 20, minRate},
		{"unlimited starts from what it saw (at least 1/s)", 0, 1, 0.5},
		{"no 429, no change", 8, 0, 8},
		{"unlimited stays unlimited", 0, 0, rate.Inf},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(tc.ceiling, 0)
			for range tc.n429 {
				l.answered(true)
			}
			l.answered(false) // a success right after a 429 changes nothing
			if got := l.lim.Limit(); got != tc.want {
				t.Errorf("rate = %g, want %g", got, tc.want)
			}
		})
	}
}
