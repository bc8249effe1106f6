package fencelock

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The admin calls on the shared cluster: the sessions list shows a holder and a waiter,
// force-release hands the lock to the waiter, and a revoked session loses its grant and
// its lease.
func TestAdminCalls(t *testing.T) {
	_, c, name := setup(t)
	ctx := context.Background()
	status, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if status.LeaderID == 0 || len(status.Members) != 3 {
		t.Fatalf("status: %+v", status)
	}
	holder := newSession(t, c, 10*time.Second)
	waiter := newSession(t, c, 10*time.Second)
	first := mustLock(t, holder, name)
	results := queue(t, c, name, first.Token(), []*Session{waiter})

	sessions, revision, err := c.Sessions(ctx, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if revision == 0 {
		t.Fatal("no revision")
	}
	byID := map[uint64]SessionInfo{}
	for _, s := range sessions {
		byID[s.SessionID] = s
	}
	h, w := byID[holder.ID()], byID[waiter.ID()]
	if len(h.Held) != 1 || h.Held[0] != (HeldLock{Name: name, Token: first.Token()}) || h.TTLMillis != 10_000 {
		t.Fatalf("the holder's session: %+v", h)
	}
	if len(w.Waiting) != 1 || w.Waiting[0] != name {
		t.Fatalf("the waiter's session: %+v", w)
	}
	// Pages are followed, and max is kept.
	if few, _, err := c.Sessions(ctx, 1); err != nil || len(few) != 1 {
		t.Fatalf("at most one session: %v, %v", few, err)
	}

	released, err := c.ForceRelease(ctx, name)
	if err != nil || released != 1 {
		t.Fatalf("force-release: %d, %v", released, err)
	}
	var second *Lock
	select {
	case second = <-results[0]:
	case <-time.After(patience):
		t.Fatal("the waiter was not granted after the force-release")
	}
	if second == nil || second.Token() <= first.Token() {
		t.Fatalf("the waiter's grant: %+v after token %d", second, first.Token())
	}
	if current, err := c.Verify(ctx, name, first.Token()); err != nil || current {
		t.Fatalf("the forced-out token is current: %v, %v", current, err)
	}
	if released, err := c.ForceRelease(ctx, name+"/nobody"); err != nil || released != 0 {
		t.Fatalf("force-release of a free lock: %d, %v", released, err)
	}

	released, err = c.RevokeSession(ctx, waiter.ID())
	if err != nil || released != 1 {
		t.Fatalf("revoke: %d, %v", released, err)
	}
	expectState(t, c, name, nil, nil)
	select {
	case <-waiter.Lost():
	case <-time.After(patience):
		t.Fatal("the revoked session is not lost")
	}
	sessions, _, err = c.Sessions(ctx, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.SessionID == waiter.ID() {
			t.Fatalf("the revoked session is listed: %+v", s)
		}
	}
}

// With auth on, the admin calls need the admin right: a user with every other right is
// refused with PERMISSION_DENIED (403), by bearer token as by password, and root is served.
func TestAdminCallsNeedTheAdminRight(t *testing.T) {
	c1 := singleNode(t, false)
	endpoint := c1.nodes[0].client
	root := []string{"--endpoints", endpoint, "--user", "root", "--password", "secret-pw"}
	for _, args := range [][]string{
		{"user", "add", "root", "--new-password", "secret-pw", "--endpoints", endpoint},
		append([]string{"auth", "enable"}, root...),
		append([]string{"role", "add", "worker"}, root...),
		append([]string{"role", "grant", "worker", "", "acquire,release,read"}, root...),
		append([]string{"user", "add", "alice", "--new-password", "alice-pw"}, root...),
		append([]string{"user", "grant-role", "alice", "worker"}, root...),
	} {
		if out, err := exec.Command(c1.bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("fencelock %v: %v: %s", args, err, out)
		}
	}
	out, err := exec.Command(c1.bin, append([]string{"auth", "token", "alice"}, root...)...).Output()
	if err != nil {
		t.Fatalf("fencelock auth token: %v", err)
	}
	token := strings.TrimSpace(string(out))
	ctx := context.Background()
	for _, authorization := range []string{BasicAuth("alice", "alice-pw"), "Bearer " + token} {
		alice, err := New(Config{Endpoints: c1.endpoints(), Authorization: authorization, RetryDeadline: patience})
		if err != nil {
			t.Fatal(err)
		}
		s := newSession(t, alice, 10*time.Second)
		lock := mustLock(t, s, "go-test/admin-right")
		if _, err := alice.ForceRelease(ctx, lock.Name()); !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("force-release without the admin right: %v", err)
		}
		if _, _, err := alice.Sessions(ctx, 10); !errors.Is(err, ErrPermissionDenied) {
			t.Fatalf("sessions without the admin right: %v", err)
		}
		var apiErr *Error
		if _, err := alice.RevokeSession(ctx, s.ID()); !errors.As(err, &apiErr) || apiErr.Reason != ReasonPermissionDenied || apiErr.Status != 403 {
			t.Fatalf("revoke without the admin right: %v", err)
		}
		if err := lock.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	admin, err := New(Config{Endpoints: c1.endpoints(), Authorization: BasicAuth("root", "secret-pw"), RetryDeadline: patience})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.Sessions(ctx, 10); err != nil {
		t.Fatalf("root's sessions list: %v", err)
	}
}
