package fencelock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// EventKind is what happened to a lock.
type EventKind string

// The kinds of watch events. A later server version may add kinds: ignore unknown ones.
const (
	// Resync: the first event of every stream, and again when events were dropped
	// because the watcher fell behind; re-read with Describe/List.
	Resync   EventKind = "RESYNC"
	Acquired EventKind = "ACQUIRED"
	Released EventKind = "RELEASED"
	// Expired: released because the holder's session expired.
	Expired EventKind = "EXPIRED"
	// Forced: released by an admin's force-release.
	Forced        EventKind = "FORCED"
	SessionClosed EventKind = "SESSION_CLOSED"
	Revoked       EventKind = "REVOKED"
)

// Event is one change of a watched lock, as the cluster applied it.
type Event struct {
	Kind      EventKind `json:"kind"`
	Name      string    `json:"name"`
	SessionID uint64    `json:"session_id"`
	Token     uint64    `json:"token"`
	Mode      Mode      `json:"mode"`
	Value     []byte    `json:"value"`
	// Revision is the log index of the change.
	Revision uint64 `json:"revision"`
	// Error ends the stream (auth revoked, node stopping).
	Error *Error `json:"error"`
}

// Watch is a stream of events; read it with Next, end it with Close.
type Watch struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	body   []byte

	mu      sync.Mutex
	stream  io.ReadCloser
	scanner *bufio.Scanner
}

// Watch streams the events of lock name (or, with prefix, of every lock whose name starts
// with name; "" with prefix watches everything). Any node serves a watch; if its node
// fails, the stream is opened again on another one, and its first event, a Resync, says
// that events may have been missed. The stream ends when ctx is done or Close is called.
func (c *Client) Watch(ctx context.Context, name string, prefix bool) (*Watch, error) {
	body, _ := json.Marshal(map[string]interface{}{"name": name, "prefix": prefix})
	ctx, cancel := context.WithCancel(ctx)
	w := &Watch{c: c, ctx: ctx, cancel: cancel, body: body}
	if err := w.open(); err != nil {
		cancel()
		return nil, err
	}
	return w, nil
}

// open starts the stream on a node, trying each node in turn until the retry deadline.
func (w *Watch) open() error {
	deadline := time.Now().Add(w.c.cfg.RetryDeadline)
	for {
		node := w.c.pick()
		r, err := w.c.send(w.ctx, node, "/v1/locks/watch", w.body)
		if err == nil && r.StatusCode != http.StatusOK {
			err = decodeError(r)
			r.Body.Close()
		}
		if err == nil {
			scanner := bufio.NewScanner(r.Body)
			scanner.Buffer(make([]byte, 64<<10), 1<<20)
			w.mu.Lock()
			w.stream, w.scanner = r.Body, scanner
			w.mu.Unlock()
			return nil
		}
		var apiErr *Error
		if w.ctx.Err() != nil || (errors.As(err, &apiErr) && !apiErr.transient()) || time.Now().After(deadline) {
			return err
		}
		w.c.demote(node)
		select {
		case <-w.ctx.Done():
			return w.ctx.Err()
		case <-time.After(jitter(100 * time.Millisecond)):
		}
	}
}

// Next blocks until the next event. It returns the cluster's *Error when the stream ended
// with one that a new stream would meet too (e.g. PERMISSION_DENIED), or the context's
// error after Close or the end of ctx.
func (w *Watch) Next() (Event, error) {
	for {
		w.mu.Lock()
		scanner := w.scanner
		w.mu.Unlock()
		for scanner.Scan() {
			line := scanner.Bytes()
			if len(line) == 0 {
				continue
			}
			var event Event
			if err := json.Unmarshal(line, &event); err != nil {
				return Event{}, err
			}
			if event.Error != nil {
				if !event.Error.transient() {
					return Event{}, event.Error
				}
				break
			}
			return event, nil
		}
		// The stream broke or its node is going away: open it again elsewhere.
		if w.ctx.Err() != nil {
			return Event{}, w.ctx.Err()
		}
		w.mu.Lock()
		w.stream.Close()
		w.mu.Unlock()
		if err := w.open(); err != nil {
			return Event{}, err
		}
	}
}

// Close ends the stream.
func (w *Watch) Close() error {
	w.cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stream.Close()
}
