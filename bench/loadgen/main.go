// Command loadgen is the client side of Parley's benchmarks (bench/run.py builds and drives it).
//
//	loadgen stream -kind openai|parley-grpc|parley-rest ...   streamed replies: TTFT, ITL, tokens/s
//	loadgen unary  -kind grpc|rest ...                        GetAgent at fixed concurrency
//	loadgen ping   -target host:port ...                      health Check latency over time
//
// Each prints one JSON report on stdout. It is written in Go so that the client's own cost per
// streamed token stays small next to the servers it measures on a 2-core machine. Addresses must
// be loopback: this is a load generator.
package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(2)
}

// requireLoopback exits unless every -url/-target in args names a loopback host.
func requireLoopback(args []string) {
	for i, arg := range args {
		name, value, found := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if name != "url" && name != "target" && name != "control-url" {
			continue
		}
		if !found {
			if i+1 >= len(args) {
				continue
			}
			value = args[i+1]
		}
		host := value
		if name != "target" {
			u, err := url.Parse(value)
			if err != nil {
				fatalf("bad -url %q: %v", value, err)
			}
			host = u.Hostname()
		} else if h, _, err := net.SplitHostPort(value); err == nil {
			host = h
		}
		if host == "localhost" {
			continue
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			fatalf("%s %q is not a loopback address", name, value)
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: loadgen stream|unary|ping [flags]")
	}
	args := os.Args[2:]
	requireLoopback(args)
	switch os.Args[1] {
	case "stream":
		runStream(args)
	case "unary":
		runUnary(args)
	case "ping":
		runPing(args)
	default:
		fatalf("unknown command %q", os.Args[1])
	}
}
