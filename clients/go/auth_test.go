package fencelock

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// With auth on, a call without credentials is refused with UNAUTHENTICATED (401), and the
// Authorization header of Config is sent with every call, renewals included.
func TestAuthorizationHeader(t *testing.T) {
	c1 := singleNode(t, false)
	endpoint := c1.nodes[0].client
	for _, args := range [][]string{
		{"user", "add", "root", "--new-password", "secret-pw", "--endpoints", endpoint},
		{"auth", "enable", "--endpoints", endpoint, "--user", "root", "--password", "secret-pw"},
	} {
		if out, err := exec.Command(c1.bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("fencelock %v: %v: %s", args, err, out)
		}
	}
	ctx := context.Background()
	anonymous := testClient(t, c1.endpoints())
	var apiErr *Error
	if _, err := anonymous.NewSession(ctx, 10*time.Second); !errors.Is(err, ErrUnauthenticated) || !errors.As(err, &apiErr) || apiErr.Status != 401 {
		t.Fatalf("no credentials: %v", err)
	}
	root, err := New(Config{Endpoints: c1.endpoints(), Authorization: BasicAuth("root", "secret-pw"), RetryDeadline: patience})
	if err != nil {
		t.Fatal(err)
	}
	// The lock is still held a TTL later: renewals carried the credentials too.
	s := newSession(t, root, 5*time.Second)
	lock := mustLock(t, s, "go-test/auth")
	time.Sleep(6 * time.Second)
	if !lock.Valid() {
		t.Fatalf("the lease lapsed: renewals were refused? %v", s.Err())
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
