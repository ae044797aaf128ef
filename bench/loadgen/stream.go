package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-dev/parley/clients/go/parley"
	"github.com/parley-dev/parley/clients/go/parleyv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// streamConfig is one streaming run: `clients` goroutines, each sending one request after the
// other until `duration` has passed (or `perClient` requests), every request bounded by `timeout`.
type streamConfig struct {
	kind        string // openai | parley-grpc | parley-rest
	url         string // openai: base URL ending in /v1; parley-rest: the REST origin
	target      string // parley-grpc: host:port
	token       string // bearer token (Parley access token, LiteLLM key), optional for openai
	clients     int
	duration    time.Duration
	perClient   int
	timeout     time.Duration
	ramp        time.Duration
	prompt      string
	system      string
	model       string
	maxTokens   int
	temperature float64 // NaN: not sent
	sessions    []string
	perRequest  bool   // parley: a fresh session (from `sessions`) for every request
	count       string // words | events: what a token is
	expect      int    // tokens a complete reply has; fewer counts as an error (0: no check)
	untilEOF    bool   // also start no request after standard input closes
}

// streamResult is one request's outcome as the client saw it.
type streamResult struct {
	start  time.Time
	first  time.Duration // to the first event of any kind (-1 without one)
	tokens int
	ttft   time.Duration // -1 without a token
	gaps   []float64     // ms between consecutive content events
	total  time.Duration
	rate   float64 // tokens/s between the first and the last token (0 if < 2 events)
}

// event records the first event of any kind (Parley's message_accepted, OpenAI's role chunk).
func (r *streamResult) event() {
	if r.first < 0 {
		r.first = time.Since(r.start)
	}
}

// StreamReport is what `loadgen stream` prints (JSON).
type StreamReport struct {
	Kind         string         `json:"kind"`
	Clients      int            `json:"clients"`
	Requests     int            `json:"requests"`
	OK           int            `json:"ok"`
	Errors       int            `json:"errors"`
	ErrorKinds   map[string]int `json:"error_kinds"`
	ErrorSamples []string       `json:"error_samples"`
	DurationS    float64        `json:"duration_s"`
	Tokens       int            `json:"tokens"`
	TokensPerS   float64        `json:"tokens_per_s"`
	TTFTMs       Summary        `json:"ttft_ms"`
	FirstEventMs Summary        `json:"first_event_ms"`
	ITLMs        Summary        `json:"itl_ms"`
	TotalMs      Summary        `json:"total_ms"`
	StreamTokS   Summary        `json:"stream_tokens_per_s"`
}

type streamer interface {
	// do sends one request and reads its reply; on failure it returns the kind and the error.
	do(ctx context.Context, session string, r *streamResult, onText func(string)) (string, error)
}

func runStream(args []string) {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	c := streamConfig{}
	var sessions string
	var temperature string
	fs.StringVar(&c.kind, "kind", "openai", "openai | parley-grpc | parley-rest")
	fs.StringVar(&c.url, "url", "", "openai: base URL (…/v1); parley-rest: REST origin")
	fs.StringVar(&c.target, "target", "", "parley-grpc: host:port")
	fs.StringVar(&c.token, "token", "", "bearer token")
	fs.IntVar(&c.clients, "clients", 1, "concurrent clients")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "clients start no request after this")
	fs.IntVar(&c.perClient, "per-client", 1000, "at most this many requests per client")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "per request")
	fs.DurationVar(&c.ramp, "ramp", time.Second, "client i starts at i*ramp/clients")
	fs.StringVar(&c.prompt, "prompt", "Hello! What is a good name for a cat?", "user message")
	fs.StringVar(&c.system, "system", "", "openai: system message (Parley sends the agent's instructions)")
	fs.StringVar(&c.model, "model", "bench-model", "openai: model")
	fs.IntVar(&c.maxTokens, "max-tokens", 0, "openai: max_tokens (0: not sent)")
	fs.StringVar(&temperature, "temperature", "", "openai: temperature (empty: not sent)")
	fs.StringVar(&sessions, "sessions", "", "parley: comma-separated session names")
	fs.BoolVar(&c.perRequest, "session-per-request", false, "parley: use each session once")
	fs.StringVar(&c.count, "count", "words", "words | events: what counts as a token")
	fs.IntVar(&c.expect, "expect-tokens", 0, "a reply with fewer tokens is an error (0: no check)")
	fs.BoolVar(&c.untilEOF, "stop-on-stdin-eof", false, "also start no request after standard input closes")
	_ = fs.Parse(args)
	c.temperature = math.NaN()
	if temperature != "" {
		if _, err := fmt.Sscan(temperature, &c.temperature); err != nil {
			fatalf("-temperature: %v", err)
		}
	}
	if sessions != "" {
		c.sessions = strings.Split(sessions, ",")
	}
	if c.clients < 1 || c.perClient < 1 {
		fatalf("-clients and -per-client must be >= 1")
	}
	writeJSON(stream(c))
}

func stream(c streamConfig) StreamReport {
	clients := make([]streamer, c.clients)
	for i := range clients {
		switch c.kind {
		case "openai":
			clients[i] = newOpenAIStreamer(c)
		case "parley-rest":
			clients[i] = newRESTStreamer(c)
		case "parley-grpc":
			clients[i] = newGRPCStreamer(c) // a connection per client, like separate processes
		default:
			fatalf("unknown -kind %q", c.kind)
		}
		if c.kind != "openai" && len(c.sessions) == 0 {
			fatalf("-sessions is required for %s", c.kind)
		}
	}
	var (
		mu       sync.Mutex
		results  []streamResult
		next     atomic.Int64
		wg       sync.WaitGroup
		failures = newErrorTally()
	)
	var stopped atomic.Bool
	if c.untilEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stopped.Store(true)
		}()
	}
	start := time.Now()
	stopAt := start.Add(c.duration)
	for i := range c.clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			time.Sleep(time.Duration(int64(c.ramp) * int64(i) / int64(c.clients)))
			for n := 0; n < c.perClient && time.Now().Before(stopAt) && !stopped.Load(); n++ {
				session := ""
				if len(c.sessions) > 0 {
					if c.perRequest {
						j := int(next.Add(1)) - 1
						if j >= len(c.sessions) {
							return
						}
						session = c.sessions[j]
					} else {
						session = c.sessions[i%len(c.sessions)]
					}
				}
				r, failed := measure(c, clients[i], session, failures)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if failed {
					time.Sleep(100 * time.Millisecond) // no tight loop against a failing server
				}
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)

	var ttft, firsts, gaps, totals, rates []float64
	tokens := 0
	for _, r := range results {
		tokens += r.tokens
		if r.ttft >= 0 {
			ttft = append(ttft, ms(r.ttft))
		}
		if r.first >= 0 {
			firsts = append(firsts, ms(r.first))
		}
		gaps = append(gaps, r.gaps...)
		totals = append(totals, ms(r.total))
		if r.rate > 0 {
			rates = append(rates, r.rate)
		}
	}
	return StreamReport{
		Kind:         c.kind,
		Clients:      c.clients,
		Requests:     len(results),
		OK:           len(results) - failures.total(),
		Errors:       failures.total(),
		ErrorKinds:   failures.kinds,
		ErrorSamples: failures.samples,
		DurationS:    round3(elapsed.Seconds()),
		Tokens:       tokens,
		TokensPerS:   round3(float64(tokens) / elapsed.Seconds()),
		TTFTMs:       summarize(ttft),
		FirstEventMs: summarize(firsts),
		ITLMs:        summarize(gaps),
		TotalMs:      summarize(totals),
		StreamTokS:   summarize(rates),
	}
}

// measure runs one request and times its content events; true if it failed.
func measure(c streamConfig, s streamer, session string, failures *errorTally) (streamResult, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	start := time.Now()
	r := streamResult{start: start, first: -1, ttft: -1}
	var first, last time.Time
	events := 0
	onText := func(text string) {
		if text == "" {
			return
		}
		now := time.Now()
		r.event()
		if events == 0 {
			first = now
			r.ttft = now.Sub(start)
		} else {
			r.gaps = append(r.gaps, ms(now.Sub(last)))
		}
		last = now
		events++
		if c.count == "events" {
			r.tokens++
		} else {
			r.tokens += len(strings.Fields(text))
		}
	}
	kind, err := s.do(ctx, session, &r, onText)
	r.total = time.Since(start)
	if events >= 2 {
		r.rate = float64(r.tokens-1) / last.Sub(first).Seconds()
	}
	switch {
	case err != nil:
		if ctx.Err() != nil {
			kind = "timeout"
		}
		failures.add(kind, err.Error())
		return r, true
	case c.expect > 0 && r.tokens < c.expect:
		failures.add("short reply", fmt.Sprintf("%d of %d tokens", r.tokens, c.expect))
		return r, true
	}
	return r, false
}

// --- OpenAI-compatible chat completions over HTTP/1.1 (the upstream itself, LiteLLM) ----------

type openAIStreamer struct {
	c    streamConfig
	http *http.Client
	body []byte
}

func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 4,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		IdleConnTimeout:     90 * time.Second,
	}}
}

func newOpenAIStreamer(c streamConfig) *openAIStreamer {
	messages := []map[string]string{}
	if c.system != "" {
		messages = append(messages, map[string]string{"role": "system", "content": c.system})
	}
	messages = append(messages, map[string]string{"role": "user", "content": c.prompt})
	req := map[string]any{
		"model":          c.model,
		"messages":       messages,
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
	}
	if c.maxTokens > 0 {
		req["max_tokens"] = c.maxTokens
	}
	if !math.IsNaN(c.temperature) {
		req["temperature"] = c.temperature
	}
	body, _ := json.Marshal(req)
	return &openAIStreamer{c: c, http: newHTTPClient(), body: body}
}

type openAIChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func (s *openAIStreamer) do(ctx context.Context, _ string, r *streamResult, onText func(string)) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.c.url+"/chat/completions", bytes.NewReader(s.body))
	if err != nil {
		return "request", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if s.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.c.token)
	}
	done := false
	kind, err := sse(s.http, req, func(data []byte) error {
		r.event()
		if string(data) == "[DONE]" {
			done = true
			return nil
		}
		var chunk openAIChunk
		if err := json.Unmarshal(data, &chunk); err != nil {
			return fmt.Errorf("bad chunk %q: %w", data, err)
		}
		if chunk.Error != nil {
			return errors.New(chunk.Error.Message)
		}
		for _, choice := range chunk.Choices {
			onText(choice.Delta.Content)
		}
		return nil
	})
	if err == nil && !done {
		return "incomplete", errors.New("stream ended without [DONE]")
	}
	return kind, err
}

// sse sends req and calls onData with each Server-Sent Event's data (events end at a blank line).
func sse(client *http.Client, req *http.Request, onData func([]byte) error) (string, error) {
	resp, err := client.Do(req)
	if err != nil {
		return "transport", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fmt.Sprintf("http %d", resp.StatusCode), errors.New(string(body))
	}
	reader := bufio.NewReaderSize(resp.Body, 64*1024)
	var data []byte
	for {
		line, err := reader.ReadSlice('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, bufio.ErrBufferFull) {
				return "protocol", errors.New("SSE line over 64 KiB")
			}
			return "transport", err
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		switch {
		case bytes.HasPrefix(trimmed, []byte("data:")):
			payload := bytes.TrimPrefix(trimmed[5:], []byte(" "))
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, payload...)
		case len(trimmed) == 0 && data != nil:
			if cbErr := onData(data); cbErr != nil {
				return "stream error", cbErr
			}
			data = nil
		}
		if errors.Is(err, io.EOF) {
			if data != nil {
				if cbErr := onData(data); cbErr != nil {
					return "stream error", cbErr
				}
			}
			return "", nil
		}
	}
}

// --- Parley over REST/SSE (Envoy's transcoder) -------------------------------------------------

type restStreamer struct {
	c    streamConfig
	http *http.Client
	body []byte
}

func newRESTStreamer(c streamConfig) *restStreamer {
	body, _ := json.Marshal(map[string]string{"text": c.prompt})
	return &restStreamer{c: c, http: newHTTPClient(), body: body}
}

type restEvent struct {
	TextDelta *struct {
		Text string `json:"text"`
	} `json:"textDelta"`
	MessageCompleted json.RawMessage `json:"messageCompleted"`
	// Envoy writes a google.rpc.Status when the stream fails before its first event.
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (s *restStreamer) do(ctx context.Context, session string, r *streamResult, onText func(string)) (string, error) {
	url := s.c.url + "/v1/" + session + ":sendMessage"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(s.body))
	if err != nil {
		return "request", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.c.token)
	done := false
	kind, err := sse(s.http, req, func(data []byte) error {
		r.event()
		var event restEvent
		if err := json.Unmarshal(data, &event); err != nil {
			return fmt.Errorf("bad event %q: %w", data, err)
		}
		if event.Code != 0 {
			return fmt.Errorf("status %d: %s", event.Code, event.Message)
		}
		if event.TextDelta != nil {
			onText(event.TextDelta.Text)
		}
		if event.MessageCompleted != nil {
			done = true
		}
		return nil
	})
	if err == nil && !done {
		return "incomplete", errors.New("stream ended without messageCompleted")
	}
	return kind, err
}

// --- Parley over gRPC --------------------------------------------------------------------------

type grpcStreamer struct {
	c    streamConfig
	chat parleyv1.ChatServiceClient
	auth grpc.CallOption
}

func dialGRPC(target string) *grpc.ClientConn {
	conn, err := parley.Dial(target)
	if err != nil {
		fatalf("dial %s: %v", target, err)
	}
	return conn
}

func newGRPCStreamer(c streamConfig) *grpcStreamer {
	return &grpcStreamer{
		c:    c,
		chat: parleyv1.NewChatServiceClient(dialGRPC(c.target)),
		auth: parley.Bearer(c.token),
	}
}

func (s *grpcStreamer) do(ctx context.Context, session string, r *streamResult, onText func(string)) (string, error) {
	stream, err := s.chat.SendMessage(ctx, &parleyv1.SendMessageRequest{Session: session, Text: s.c.prompt}, s.auth)
	if err != nil {
		return grpcKind(err), err
	}
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return "incomplete", errors.New("stream ended without message_completed")
		}
		if err != nil {
			return grpcKind(err), err
		}
		r.event()
		if delta := event.GetTextDelta(); delta != nil {
			onText(delta.GetText())
		}
		if event.GetMessageCompleted() != nil {
			// Read to the end so the call finishes cleanly (trailers).
			for {
				if _, err := stream.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return "", nil
					}
					return grpcKind(err), err
				}
			}
		}
	}
}

func grpcKind(err error) string {
	return "grpc " + status.Code(err).String()
}
