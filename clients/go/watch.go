package fencelock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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
	cancel  context.CancelFunc
	body    io.ReadCloser
	scanner *bufio.Scanner
}

// Watch streams the events of lock name (or, with prefix, of every lock whose name starts
// with name; "" with prefix watches everything). Any node serves a watch. The stream
// ends when ctx is done or Close is called.
func (c *Client) Watch(ctx context.Context, name string, prefix bool) (*Watch, error) {
	body, _ := json.Marshal(map[string]interface{}{"name": name, "prefix": prefix})
	var last error
	for range c.endpoints {
		node := c.pick()
		streamCtx, cancel := context.WithCancel(ctx)
		r, err := c.send(streamCtx, node, "/v1/locks/watch", body)
		if err != nil {
			cancel()
			c.demote(node)
			last = err
			continue
		}
		if r.StatusCode != http.StatusOK {
			err := decodeError(r)
			r.Body.Close()
			cancel()
			var apiErr *Error
			if errors.As(err, &apiErr) && !apiErr.transient() {
				return nil, err
			}
			c.demote(node)
			last = err
			continue
		}
		scanner := bufio.NewScanner(r.Body)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		return &Watch{cancel: cancel, body: r.Body, scanner: scanner}, nil
	}
	return nil, last
}

// Next blocks until the next event. It returns io.EOF when the stream ended, the
// cluster's *Error when it ended with one, or the read error after Close.
func (w *Watch) Next() (Event, error) {
	for w.scanner.Scan() {
		line := w.scanner.Bytes()
		if len(line) == 0 {
			continue
		}
		var event Event
		if err := json.Unmarshal(line, &event); err != nil {
			return Event{}, err
		}
		if event.Error != nil {
			return Event{}, event.Error
		}
		return event, nil
	}
	if err := w.scanner.Err(); err != nil {
		return Event{}, err
	}
	return Event{}, io.EOF
}

// Close ends the stream.
func (w *Watch) Close() error {
	w.cancel()
	return w.body.Close()
}
