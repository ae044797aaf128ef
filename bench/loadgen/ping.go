package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// PingReport is what `loadgen ping` prints (JSON): every call, in order, as
// [start (Unix ms), latency (ms)], so the caller can cut it into phases. Control samples are
// the same calls against an HTTP URL of another process (`-control-url`), taken at the same
// time: what the machine's load alone does to a round trip.
type PingReport struct {
	Count          int          `json:"count"`
	Errors         int          `json:"errors"`
	Samples        [][2]float64 `json:"samples"`
	ControlErrors  int          `json:"control_errors"`
	ControlSamples [][2]float64 `json:"control_samples"`
}

// runPing calls grpc.health.v1.Health/Check one at a time, `interval` apart, for `duration`. A
// call cannot be answered while the server's event loop is blocked, so the slowest call bounds
// the longest stall from below (to within `interval`) and from above (plus one round trip).
func runPing(args []string) {
	fs := flag.NewFlagSet("ping", flag.ExitOnError)
	target := fs.String("target", "", "gRPC host:port")
	controlURL := fs.String("control-url", "", "also GET this URL (another process) the same way")
	duration := fs.Duration("duration", 10*time.Second, "how long, at most")
	interval := fs.Duration("interval", 2*time.Millisecond, "pause between calls")
	timeout := fs.Duration("timeout", 5*time.Second, "per call")
	untilEOF := fs.Bool("stop-on-stdin-eof", false, "also stop when standard input closes")
	_ = fs.Parse(args)
	var stopped atomic.Bool
	if *untilEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stopped.Store(true)
		}()
	}
	stopAt := time.Now().Add(*duration)
	loop := func(call func(ctx context.Context) error) (samples [][2]float64, errors int) {
		samples = make([][2]float64, 0, 1<<15)
		for time.Now().Before(stopAt) && !stopped.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			t0 := time.Now()
			err := call(ctx)
			latency := time.Since(t0)
			cancel()
			if err != nil {
				errors++
			}
			samples = append(samples, [2]float64{float64(t0.UnixMicro()) / 1000, round3(ms(latency))})
			time.Sleep(*interval)
		}
		return samples, errors
	}

	report := PingReport{ControlSamples: [][2]float64{}}
	var wg sync.WaitGroup
	if *controlURL != "" {
		client := newHTTPClient()
		wg.Add(1)
		go func() {
			defer wg.Done()
			report.ControlSamples, report.ControlErrors = loop(func(ctx context.Context) error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, *controlURL, nil)
				if err != nil {
					return err
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.Body.Close()
			})
		}()
	}
	health := healthpb.NewHealthClient(dialGRPC(*target))
	report.Samples, report.Errors = loop(func(ctx context.Context) error {
		_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
	report.Count = len(report.Samples)
	wg.Wait()
	writeJSON(report)
}
