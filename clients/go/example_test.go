package fencelock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	fencelock "example.invalid/fencelock/clients/go"
)

// Take a lock, do fenced work with its token, stop when the lease is lost, release.
func Example() {
	ctx := context.Background()
	// Any nodes of the cluster, e.g. "10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001".
	endpoints := strings.Split(os.Getenv("FENCELOCK_ENDPOINTS"), ",")
	client, err := fencelock.New(fencelock.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	session, err := client.NewSession(ctx, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close(ctx)

	// Wait for the lock at most 30 s (the cluster withdraws the wait when it runs out).
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lock, err := session.Lock(waitCtx, "example/jobs/billing")
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-lock.Lost():
		// The lease ran out on our clock, before the cluster's: stop at once.
		log.Print("lost the lock")
	default:
		// The work, with the token sent along to the resource, which refuses tokens
		// older than the newest it has seen.
		fmt.Println("holding", lock.Name(), "token > 0:", lock.Token() > 0)
	}

	// Another session only tries: the lock is taken.
	other, err := client.NewSession(ctx, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close(ctx)
	_, err = other.TryLock(ctx, "example/jobs/billing")
	fmt.Println("try-lock would block:", errors.Is(err, fencelock.ErrWouldBlock))

	if err := lock.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Releasing again with the old token is refused with a typed reason.
	err = lock.Session().Release(ctx, lock.Name(), lock.Token())
	fmt.Println("second release refused as not held:", errors.Is(err, fencelock.ErrNotHeld))
	// Output:
	// holding example/jobs/billing token > 0: true
	// try-lock would block: true
	// second release refused as not held: true
}
