package fencelock

import (
	"context"
	"testing"
	"time"
)

// Over TLS the cluster speaks HTTP/2 (by ALPN): the client's default transport negotiates
// it, locks work, and a cancelled wait resets its stream, which withdraws the wait just as
// closing an HTTP/1.1 connection does.
func TestTLSWithHTTP2(t *testing.T) {
	c1 := singleNode(t, true)
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
	cancelWithdraws(t, c, name)
	// A client without the cluster's CA is refused at the handshake.
	untrusting, err := New(Config{Endpoints: []string{"https://" + c1.nodes[0].client}, RetryDeadline: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := untrusting.Describe(ctx, name); err == nil {
		t.Fatal("a client without the CA was served")
	}
}
