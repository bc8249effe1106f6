package fencelock

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Config configures a Client. Only Endpoints is required.
type Config struct {
	// Endpoints are the client addresses of the cluster's nodes, "host:port" or
	// "http(s)://host:port". Any subset will do: the client follows the leader.
	Endpoints []string
	// TLS, when set, is the TLS configuration for https:// (the cluster's CA in RootCAs;
	// a client certificate when the cluster requires one); endpoints without a scheme
	// then use https. Ignored when HTTPClient is set.
	TLS *tls.Config
	// HTTPClient sends the requests (proxies, custom transports). Default: a client of
	// its own with no overall timeout (waits are long polls; CallTimeout bounds other
	// calls). Over TLS the cluster offers only HTTP/2 by ALPN: a Transport given its own
	// TLSClientConfig needs ForceAttemptHTTP2.
	HTTPClient *http.Client
	// Authorization is sent as the authorization header of every call:
	// "Basic base64(user:password)" or "Bearer <token>". Empty: none.
	Authorization string
	// CallTimeout bounds one attempt of a call that is not a wait (default 5 s).
	CallTimeout time.Duration
	// RetryDeadline bounds the retries of one call across redirects, elections and
	// unreachable nodes (default 30 s). A call also stops when its context ends.
	RetryDeadline time.Duration
	// SafetyMargin is taken off every lease on the client's clock, so that Lost fires
	// before the cluster could expire the session (default: ttl/10, at least 100 ms).
	SafetyMargin time.Duration
}

// Client talks to a fencelock cluster over its HTTP/JSON API. It is safe for concurrent
// use; share one per process.
type Client struct {
	cfg       Config
	http      *http.Client
	endpoints []string

	mu     sync.Mutex
	leader string // base URL of the node believed to lead, "" when unknown
	next   int    // round-robin position when no leader is known
	// changed is closed (and replaced) when a new leader becomes known.
	changed chan struct{}
}

// BasicAuth is the Authorization value for a user and password (Config.Authorization).
// Send it over TLS only.
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// New returns a client of the cluster at cfg.Endpoints. It does not connect yet.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("fencelock: no endpoints")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.RetryDeadline <= 0 {
		cfg.RetryDeadline = 30 * time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.TLS != nil {
			transport.TLSClientConfig = cfg.TLS.Clone()
			transport.ForceAttemptHTTP2 = true
		}
		hc = &http.Client{Transport: transport}
	}
	// A redirect to the leader is followed by the client itself (it switches its leader
	// and keeps its request ids), never by net/http.
	copied := *hc
	copied.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c := &Client{cfg: cfg, http: &copied, changed: make(chan struct{})}
	for _, e := range cfg.Endpoints {
		c.endpoints = append(c.endpoints, c.baseURL(e))
	}
	return c, nil
}

// baseURL turns "host:port" into "http://host:port" (or https when the configured
// endpoints use https).
func (c *Client) baseURL(addr string) string {
	addr = strings.TrimRight(addr, "/")
	if strings.Contains(addr, "://") {
		return addr
	}
	scheme := "http"
	if c.cfg.TLS != nil {
		scheme = "https"
	}
	for _, e := range c.cfg.Endpoints {
		if strings.HasPrefix(e, "https://") {
			scheme = "https"
		}
	}
	return scheme + "://" + addr
}

// pick returns the node to send the next attempt to.
func (c *Client) pick() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader != "" {
		return c.leader
	}
	node := c.endpoints[c.next%len(c.endpoints)]
	c.next++
	return node
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if leader := c.baseURL(addr); leader != c.leader {
		c.leader = leader
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// leaderChange is closed when a new leader becomes known.
func (c *Client) leaderChange() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// onLeaderChange cancels a long poll on node once another node is known to lead. A node
// that stopped without closing its connections (paused, cut off) would otherwise hold
// the wait's answer for ever, while the wait lives on in the new leader's state machine;
// the retry on the new leader carries the same request id and re-attaches to it.
func (c *Client) onLeaderChange(ctx context.Context, node string, cancel context.CancelFunc) {
	changed := c.leaderChange()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			if leader := c.leaderURL(); leader != "" && leader != node {
				cancel()
				return
			}
			changed = c.leaderChange()
		}
	}
}

// leaderURL is the node the client believes leads ("" when unknown).
func (c *Client) leaderURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// demote forgets node as the leader after it failed.
func (c *Client) demote(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == node {
		c.leader = ""
	}
}

// callKind says how an attempt is bounded.
type callKind int

const (
	// bounded: each attempt ends after CallTimeout.
	bounded callKind = iota
	// longPoll: an attempt lasts as long as the context (a waiting acquire).
	longPoll
)

// call POSTs req as JSON to path and decodes the answer into resp, retrying on another
// node (or the leader a redirect names) while the error is transient, the context lives
// and the retry deadline has not passed. Every attempt sends the same body: a mutation's
// request id is in it, so a retry acts at most once.
func (c *Client) call(ctx context.Context, kind callKind, path string, req, resp interface{}) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(c.cfg.RetryDeadline)
	backoff := 20 * time.Millisecond
	var last error
	for attempt := 0; ; attempt++ {
		node := c.pick()
		err := c.attempt(ctx, kind, node, path, body, resp)
		if err == nil {
			// Only the leader answers these routes.
			c.setLeader(node)
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var apiErr *Error
		switch {
		case errors.As(err, &apiErr) && apiErr.Reason == ReasonNotLeader && apiErr.Leader != "":
			// Straight to the leader it names, no pause.
			c.setLeader(apiErr.Leader)
			if attempt < 3 {
				continue
			}
		case errors.As(err, &apiErr) && !apiErr.transient():
			return err
		default:
			// Unreachable, no leader, or an unknown outcome: another node, after a pause.
			c.demote(node)
		}
		if time.Now().After(deadline) {
			return last
		}
		pause := jitter(backoff)
		if backoff < time.Second {
			backoff *= 2
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// jitter is a random duration between d/2 and d.
func jitter(d time.Duration) time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d/2)+1))
	if err != nil {
		return d
	}
	return d/2 + time.Duration(n.Int64())
}

// attempt sends one request to one node.
func (c *Client) attempt(ctx context.Context, kind callKind, node, path string, body []byte, resp interface{}) error {
	var cancel context.CancelFunc
	if kind == bounded {
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
		go c.onLeaderChange(ctx, node, cancel)
	}
	defer cancel()
	r, err := c.send(ctx, node, path, body)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return decodeError(r)
	}
	if resp == nil {
		_, _ = io.Copy(io.Discard, r.Body)
		return nil
	}
	return json.NewDecoder(r.Body).Decode(resp)
}

// send POSTs body to node's path; the caller closes the answer's body.
func (c *Client) send(ctx context.Context, node, path string, body []byte) (*http.Response, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, node+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	r.Header.Set("content-type", "application/json")
	if c.cfg.Authorization != "" {
		r.Header.Set("authorization", c.cfg.Authorization)
	}
	return c.http.Do(r)
}

// decodeError reads an error answer; a body that is not the documented error form
// becomes an INTERNAL error carrying the status.
func decodeError(r *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	e := &Error{}
	if json.Unmarshal(data, e) != nil || e.Reason == "" {
		e = &Error{Reason: ReasonInternal, Message: strings.TrimSpace(string(data))}
	}
	e.Status = r.StatusCode
	return e
}

// Verify asks whether token is a current grant of lock name (a linearizable read).
// Advisory only: a holder can be stale by the time it acts; the resource's own check of
// the token (a fence) is the safe one.
func (c *Client) Verify(ctx context.Context, name string, token uint64) (bool, error) {
	var resp struct {
		Current bool `json:"current"`
	}
	err := c.call(ctx, bounded, "/v1/locks/verify", map[string]interface{}{"name": name, "token": token}, &resp)
	return resp.Current, err
}

// Describe reads one lock's holders and waiters (a linearizable read). The LockInfo is
// nil when no one holds or waits for the lock.
func (c *Client) Describe(ctx context.Context, name string) (*LockInfo, uint64, error) {
	var resp struct {
		Lock     *LockInfo `json:"lock"`
		Revision uint64    `json:"revision"`
	}
	err := c.call(ctx, bounded, "/v1/locks/describe", map[string]string{"name": name}, &resp)
	return resp.Lock, resp.Revision, err
}

// List reads the locks whose names start with prefix, in name order, at most max of
// them (following the pages), and the revision of the last page.
func (c *Client) List(ctx context.Context, prefix string, max int) ([]LockInfo, uint64, error) {
	var locks []LockInfo
	var revision uint64
	after := ""
	for len(locks) < max {
		req := map[string]interface{}{"prefix": prefix, "start_after": after}
		var resp struct {
			Locks          []LockInfo `json:"locks"`
			NextStartAfter string     `json:"next_start_after"`
			Revision       uint64     `json:"revision"`
		}
		if err := c.call(ctx, bounded, "/v1/locks/list", req, &resp); err != nil {
			return nil, 0, err
		}
		locks = append(locks, resp.Locks...)
		revision = resp.Revision
		if resp.NextStartAfter == "" {
			break
		}
		after = resp.NextStartAfter
	}
	if len(locks) > max {
		locks = locks[:max]
	}
	return locks, revision, nil
}

// Status is the cluster as one node sees it (GET /v1/cluster/status on that node).
func (c *Client) Status(ctx context.Context) (*ClusterStatus, error) {
	var status ClusterStatus
	node := c.pick()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, node+"/v1/cluster/status", nil)
	if err != nil {
		return nil, err
	}
	if c.cfg.Authorization != "" {
		r.Header.Set("authorization", c.cfg.Authorization)
	}
	resp, err := c.http.Do(r)
	if err != nil {
		c.demote(node)
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, decodeError(resp)
	}
	return &status, json.NewDecoder(resp.Body).Decode(&status)
}

// newUUID returns a random (version 4) UUID in its text form.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
