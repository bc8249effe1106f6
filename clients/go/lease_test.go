package fencelock

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// The lease counts from when a renewal was sent, not from when its answer came: against
// a node that takes `delay` to answer a renewal, the deadline after that renewal is at
// most (answer time - delay) + TTL - margin.
func TestLeaseCountsFromTheRenewalsSendTime(t *testing.T) {
	const ttl = 1500 * time.Millisecond
	const delay = 400 * time.Millisecond
	var mu sync.Mutex
	var answered []time.Duration // lease-clock times at which renewals were answered
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/sessions/open":
		case "/v1/sessions/keepalive":
			time.Sleep(delay)
			mu.Lock()
			answered = append(answered, now())
			mu.Unlock()
		default:
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]uint64{"session_id": 7, "ttl_ms": uint64(ttl / time.Millisecond)})
	}))
	defer server.Close()
	c, err := New(Config{Endpoints: []string{server.URL}, SafetyMargin: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewSession(context.Background(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	defer s.StopRenewals()
	eventually(t, "a renewal was answered and counted", func() error {
		mu.Lock()
		n := len(answered)
		mu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		if n == 0 || s.deadline < answered[0]-delay+ttl-3*s.margin {
			return context.DeadlineExceeded
		}
		return nil
	})
	s.StopRenewals()
	mu.Lock()
	last := answered[len(answered)-1]
	mu.Unlock()
	s.mu.Lock()
	deadline := s.deadline
	s.mu.Unlock()
	if bound := last - delay + ttl - s.margin; deadline > bound {
		t.Fatalf("the deadline %v is past the send-time bound %v: counted from the answer", deadline, bound)
	}
}
