// Command fencelock-load is the Go client's side of scripts/bench-clients.sh, which runs
// the same loop with the Rust client and the Python package against the same cluster
// (docs/benchmarks.md, "Clients in other languages").
//
// One Client, -clients sessions, one goroutine per session taking and releasing lock
// -name until -ops pairs are done in all or -max-secs pass; prints one JSON line (ops,
// secs, errors, p50_ms, p99_ms).
//
//	fencelock-load -endpoints 127.0.0.1:7001 -name bench/seq -clients 1 -ops 2000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fencelock "example.invalid/fencelock/clients/go"
)

func main() {
	endpoints := flag.String("endpoints", "", "client addresses of the cluster's nodes, comma-separated")
	name := flag.String("name", "", "the lock every worker takes and releases")
	clients := flag.Int("clients", 1, "sessions, one worker each (1: seq; more: contended on one name)")
	ops := flag.Int64("ops", 2000, "acquire + release pairs in all")
	maxSecs := flag.Float64("max-secs", 60, "upper bound of the timed loop, seconds")
	ttl := flag.Float64("ttl", 10, "session TTL, seconds")
	flag.Parse()
	if *endpoints == "" || *name == "" || *clients < 1 || *clients > 1024 || *maxSecs <= 0 {
		fmt.Fprintln(os.Stderr, "fencelock-load: -endpoints and -name are required, -clients 1..1024, -max-secs positive")
		os.Exit(2)
	}
	line, err := run(strings.Split(*endpoints, ","), *name, *clients, *ops, *maxSecs, *ttl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fencelock-load:", err)
		os.Exit(1)
	}
	fmt.Println(line)
}

func run(endpoints []string, name string, clients int, total int64, maxSecs, ttl float64) (string, error) {
	ctx := context.Background()
	client, err := fencelock.New(fencelock.Config{Endpoints: endpoints, RetryDeadline: 30 * time.Second})
	if err != nil {
		return "", err
	}
	var sessions []*fencelock.Session
	defer func() {
		for _, s := range sessions {
			_ = s.Close(ctx)
		}
	}()
	for i := 0; i < clients; i++ {
		s, err := client.NewSession(ctx, time.Duration(ttl*float64(time.Second)))
		if err != nil {
			return "", err
		}
		sessions = append(sessions, s)
		// Warm-up, not timed: one pair per session.
		lock, err := s.Lock(ctx, name)
		if err != nil {
			return "", err
		}
		if err := lock.Release(ctx); err != nil {
			return "", err
		}
	}
	var claimed, errors int64
	start := time.Now()
	deadline := start.Add(time.Duration(maxSecs * float64(time.Second)))
	took := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Add(1)
		go func(i int, s *fencelock.Session) {
			defer wg.Done()
			for atomic.AddInt64(&claimed, 1) <= total && time.Now().Before(deadline) {
				t0 := time.Now()
				lock, err := s.Lock(ctx, name)
				if err == nil {
					err = lock.Release(ctx)
				}
				if err != nil {
					atomic.AddInt64(&errors, 1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				took[i] = append(took[i], time.Since(t0))
			}
		}(i, s)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	var all []time.Duration
	for _, t := range took {
		all = append(all, t...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	quantile := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return all[int(float64(len(all)-1)*q+0.5)].Seconds() * 1e3
	}
	out, err := json.Marshal(map[string]interface{}{
		"ops": len(all), "secs": secs, "errors": errors,
		"p50_ms": quantile(0.5), "p99_ms": quantile(0.99),
	})
	return string(out), err
}
