package main

import (
	"encoding/json"
	"math"
	"os"
	"sort"
	"sync"
	"time"
)

// Summary describes a sample of durations, in milliseconds. Percentiles are nearest-rank.
type Summary struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

func summarize(samples []float64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		if i < 0 {
			i = 0
		}
		return round3(s[i])
	}
	return Summary{
		N:    len(s),
		Mean: round3(sum / float64(len(s))),
		P50:  rank(0.50),
		P90:  rank(0.90),
		P99:  rank(0.99),
		Max:  round3(s[len(s)-1]),
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// errorTally counts failures by kind and keeps the first few messages.
type errorTally struct {
	mu      sync.Mutex
	kinds   map[string]int
	samples []string
}

func newErrorTally() *errorTally { return &errorTally{kinds: map[string]int{}} }

func (t *errorTally) add(kind, message string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.kinds[kind]++
	if len(t.samples) < 5 {
		if len(message) > 300 {
			message = message[:300]
		}
		t.samples = append(t.samples, kind+": "+message)
	}
}

func (t *errorTally) total() int {
	n := 0
	for _, c := range t.kinds {
		n += c
	}
	return n
}

func writeJSON(v any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fatalf("writing the result: %v", err)
	}
}
