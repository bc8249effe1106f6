package fencelock

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// Over TLS the cluster speaks HTTP/2 (by ALPN): the client's default transport negotiates
// it, locks work, and a cancelled wait resets its stream, which withdraws the wait just as
// closing an HTTP/1.1 connection does.
func TestTLSWithHTTP2(t *testing.T) {
	cl := needCluster(t)
	c1, err := startCluster(cl.bin, 1, true)
	if c1 != nil {
		// Registered before the sessions' cleanups, so it runs after them.
		t.Cleanup(func() {
			c1.stop()
			if !t.Failed() {
				os.RemoveAll(c1.dir)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	c := testClientTLS(t, c1.endpoints(), c1.tls)
	ctx := context.Background()
	name := "go-test/tls"
	r, err := c.http.Get("https://" + c1.nodes[0].client + "/v1/cluster/status")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.ProtoMajor != 2 {
		t.Fatalf("the client's transport spoke %s over TLS, not HTTP/2", r.Proto)
	}
	a := newSession(t, c, 10*time.Second)
	b := newSession(t, c, 10*time.Second)
	held := mustLock(t, a, name)
	waitCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := b.Lock(waitCtx, name)
		done <- err
	}()
	expectState(t, c, name, []uint64{held.Token()}, []uint64{b.ID()})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("the wait did not return after the cancel")
	}
	expectState(t, c, name, []uint64{held.Token()}, nil)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// A client without the cluster's CA is refused at the handshake.
	untrusting, err := New(Config{Endpoints: []string{"https://" + c1.nodes[0].client}, RetryDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := untrusting.Describe(ctx, name); err == nil {
		t.Fatal("a client without the CA was served")
	}
}
