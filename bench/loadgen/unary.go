package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/parley-dev/parley/clients/go/parley"
	"github.com/parley-dev/parley/clients/go/parleyv1"
	"google.golang.org/grpc"
)

// UnaryReport is what `loadgen unary` prints (JSON).
type UnaryReport struct {
	Kind         string         `json:"kind"`
	Concurrency  int            `json:"concurrency"`
	Connections  int            `json:"connections"`
	Requests     int            `json:"requests"`
	OK           int            `json:"ok"`
	Errors       int            `json:"errors"`
	ErrorKinds   map[string]int `json:"error_kinds"`
	ErrorSamples []string       `json:"error_samples"`
	DurationS    float64        `json:"duration_s"`
	RPS          float64        `json:"rps"`
	LatencyMs    Summary        `json:"latency_ms"`
}

// runUnary: `concurrency` workers call GetAgent back to back for `duration` (after `warmup`,
// whose calls are not counted), at most `max` calls in all.
func runUnary(args []string) {
	fs := flag.NewFlagSet("unary", flag.ExitOnError)
	kind := fs.String("kind", "rest", "grpc | rest")
	target := fs.String("target", "", "grpc: host:port")
	url := fs.String("url", "", "rest: REST origin")
	token := fs.String("token", "", "bearer token")
	agent := fs.String("agent", "", "agents/{agent}")
	concurrency := fs.Int("concurrency", 50, "workers")
	connections := fs.Int("connections", 0, "grpc: connections shared by the workers (0: one per worker)")
	duration := fs.Duration("duration", 10*time.Second, "measured time")
	warmup := fs.Duration("warmup", time.Second, "uncounted time first")
	maxCalls := fs.Int("max", 1_000_000, "at most this many counted calls")
	timeout := fs.Duration("timeout", 10*time.Second, "per call")
	_ = fs.Parse(args)
	if *concurrency < 1 || *agent == "" {
		fatalf("-concurrency >= 1 and -agent are required")
	}
	conns := *connections
	if conns <= 0 || conns > *concurrency {
		conns = *concurrency
	}

	var call func(ctx context.Context, worker int) (string, error)
	switch *kind {
	case "grpc":
		stubs := make([]parleyv1.AgentServiceClient, conns)
		for i := range stubs {
			stubs[i] = parleyv1.NewAgentServiceClient(dialGRPC(*target))
		}
		auth := parley.Bearer(*token)
		request := &parleyv1.GetAgentRequest{Name: *agent}
		call = func(ctx context.Context, worker int) (string, error) {
			_, err := stubs[worker%conns].GetAgent(ctx, request, auth, grpc.WaitForReady(false))
			if err != nil {
				return grpcKind(err), err
			}
			return "", nil
		}
	case "rest":
		clients := make([]*http.Client, *concurrency)
		for i := range clients {
			clients[i] = newHTTPClient()
		}
		endpoint := *url + "/v1/" + *agent
		call = func(ctx context.Context, worker int) (string, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
			if err != nil {
				return "request", err
			}
			req.Header.Set("Authorization", "Bearer "+*token)
			resp, err := clients[worker].Do(req)
			if err != nil {
				return "transport", err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return "transport", err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Sprintf("http %d", resp.StatusCode), fmt.Errorf("%.200s", body)
			}
			return "", nil
		}
	default:
		fatalf("unknown -kind %q", *kind)
	}

	var (
		mu        sync.Mutex
		latencies []float64
		failures  = newErrorTally()
		wg        sync.WaitGroup
		counted   int
	)
	begin := time.Now()
	measureFrom := begin.Add(*warmup)
	stopAt := measureFrom.Add(*duration)
	for w := range *concurrency {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			local := make([]float64, 0, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(stopAt) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				kind, err := call(ctx, w)
				cancel()
				if t0.Before(measureFrom) {
					continue
				}
				mu.Lock()
				if counted >= *maxCalls {
					mu.Unlock()
					break
				}
				counted++
				mu.Unlock()
				if err != nil {
					failures.add(kind, err.Error())
				} else {
					local = append(local, ms(time.Since(t0)))
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	if elapsed > *duration {
		// Calls started before the stop finish after it: count the time they took.
		elapsed = max(*duration, elapsed)
	}
	writeJSON(UnaryReport{
		Kind:         *kind,
		Concurrency:  *concurrency,
		Connections:  map[bool]int{true: conns, false: *concurrency}[*kind == "grpc"],
		Requests:     counted,
		OK:           len(latencies),
		Errors:       failures.total(),
		ErrorKinds:   failures.kinds,
		ErrorSamples: failures.samples,
		DurationS:    round3(elapsed.Seconds()),
		RPS:          round3(float64(len(latencies)) / elapsed.Seconds()),
		LatencyMs:    summarize(latencies),
	})
}
