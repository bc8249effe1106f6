package fencelock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The shared client scenarios (conformance/scenarios.json; vocabulary in
// conformance/README.md) run through the Go client. A `pausable` session lives in a child
// process (this test binary re-executed with actorEnv set) that runs the steps of that
// session and its grants, so `pause` can stop it with SIGSTOP.

const actorEnv = "FENCELOCK_GO_ACTOR"

type scenarioFile struct {
	Version   int        `json:"version"`
	Scenarios []scenario `json:"scenarios"`
}

type scenario struct {
	Name    string `json:"name"`
	Cluster string `json:"cluster"`
	Steps   []step `json:"steps"`
}

type step struct {
	Op          string      `json:"op"`
	As          string      `json:"as,omitempty"`
	Session     string      `json:"session,omitempty"`
	Lock        string      `json:"lock,omitempty"`
	Mode        string      `json:"mode,omitempty"`
	Wait        string      `json:"wait,omitempty"`
	TimeoutMs   uint64      `json:"timeout_ms,omitempty"`
	TTLMs       uint64      `json:"ttl_ms,omitempty"`
	Pausable    bool        `json:"pausable,omitempty"`
	Expect      string      `json:"expect,omitempty"`
	Acquire     string      `json:"acquire,omitempty"`
	Grant       string      `json:"grant,omitempty"`
	Watch       string      `json:"watch,omitempty"`
	Event       string      `json:"event,omitempty"`
	Ms          uint64      `json:"ms,omitempty"`
	Immediately bool        `json:"immediately,omitempty"`
	Holders     []string    `json:"holders,omitempty"`
	Waiters     []string    `json:"waiters,omitempty"`
	Grants      []string    `json:"grants,omitempty"`
	Events      []wantEvent `json:"events,omitempty"`
}

type wantEvent struct {
	Kind  string `json:"kind"`
	Grant string `json:"grant"`
}

// result is what a step reports (the child's answer on its stdout).
type result struct {
	Err     string `json:"err,omitempty"`
	Token   uint64 `json:"token,omitempty"`
	Session uint64 `json:"session,omitempty"`
	Lock    string `json:"lock,omitempty"`
}

type pending struct {
	done   chan struct{}
	cancel context.CancelFunc
	lock   *Lock
	err    error
}

type recorded struct {
	event Event
	at    time.Time
}

type watchRec struct {
	mu     sync.Mutex
	events []recorded
	w      *Watch
}

// runner holds one scenario's world. In the child, it runs every step it gets locally.
type runner struct {
	client   *Client
	cl       *cluster // nil in the child
	prefix   string
	sessions map[string]*Session
	ids      map[string]uint64 // session name → id (the child's too)
	grants   map[string]*Lock
	tokens   map[string]uint64 // grant name → token (the child's too), kept after release
	locks    map[string]string // grant name → full lock name
	lostMu   sync.Mutex
	lostAt   map[string]time.Time
	pending  map[string]*pending
	watches  map[string]*watchRec
	fences   map[string]uint64
	child    *actor
	remote   map[string]bool // session, grant and pending names that live in the child
}

func newRunner(client *Client, cl *cluster, prefix string) *runner {
	return &runner{
		client: client, cl: cl, prefix: prefix,
		sessions: map[string]*Session{}, ids: map[string]uint64{}, grants: map[string]*Lock{},
		tokens: map[string]uint64{}, locks: map[string]string{}, lostAt: map[string]time.Time{},
		pending: map[string]*pending{}, watches: map[string]*watchRec{}, fences: map[string]uint64{},
		remote: map[string]bool{},
	}
}

func (r *runner) acquireOptions(s step) AcquireOptions {
	o := AcquireOptions{Mode: Exclusive}
	if s.Mode == "shared" {
		o.Mode = Shared
	}
	switch s.Wait {
	case "no_wait":
		o.Wait = NoWait
	case "timeout":
		o.Wait = WaitFor(time.Duration(s.TimeoutMs) * time.Millisecond)
	default:
		o.Wait = Forever
	}
	return o
}

// outcome checks an acquire's result against s.Expect and records a grant.
func (r *runner) outcome(s step, name string, lock *Lock, err error) (result, error) {
	got := "granted"
	switch {
	case errors.Is(err, ErrWouldBlock):
		got = "would_block"
	case errors.Is(err, ErrTimedOut):
		got = "timed_out"
	case err != nil:
		return result{}, fmt.Errorf("acquire: %w", err)
	}
	if got != s.Expect {
		return result{}, fmt.Errorf("expected %s, got %s", s.Expect, got)
	}
	if lock == nil {
		return result{}, nil
	}
	r.grants[s.As] = lock
	r.tokens[s.As] = lock.Token()
	r.locks[s.As] = name
	go func(grant string) {
		<-lock.Lost()
		r.lostMu.Lock()
		r.lostAt[grant] = time.Now()
		r.lostMu.Unlock()
	}(s.As)
	return result{Token: lock.Token(), Lock: name}, nil
}

// routed reports whether step s concerns the child's session or grants.
func (r *runner) routed(s step) bool {
	if r.child == nil {
		return false
	}
	switch s.Op {
	case "session":
		return s.Pausable
	case "close", "acquire", "start_acquire", "stop_renewals":
		return r.remote[s.Session]
	case "await", "cancel":
		return r.remote[s.Acquire]
	case "release", "expect_lost":
		return r.remote[s.Grant]
	}
	return false
}

// exec runs one step: in the child when it is the child's, else here.
func (r *runner) exec(s step) error {
	if s.Lock != "" {
		s.Lock = r.prefix + s.Lock
	}
	if s.Op == "session" && s.Pausable && r.cl != nil && r.child == nil {
		child, err := startActor(r.client.cfg.Endpoints)
		if err != nil {
			return err
		}
		r.child = child
	}
	if r.routed(s) {
		res, err := r.child.do(s)
		if err != nil {
			return err
		}
		switch s.Op {
		case "session":
			r.ids[s.As] = res.Session
			r.remote[s.As] = true
		case "start_acquire":
			r.remote[s.As] = true
		case "acquire", "await":
			if res.Token != 0 {
				r.tokens[s.As] = res.Token
				r.locks[s.As] = res.Lock
				r.remote[s.As] = true
			}
		}
		return nil
	}
	_, err := r.local(s)
	return err
}

func (r *runner) local(s step) (result, error) {
	ctx := context.Background()
	switch s.Op {
	case "session":
		session, err := r.client.NewSession(ctx, time.Duration(s.TTLMs)*time.Millisecond)
		if err != nil {
			return result{}, err
		}
		r.sessions[s.As] = session
		r.ids[s.As] = session.ID()
		return result{Session: session.ID()}, nil
	case "close":
		return result{}, r.sessions[s.Session].Close(ctx)
	case "acquire":
		lock, err := r.sessions[s.Session].Acquire(ctx, s.Lock, r.acquireOptions(s))
		return r.outcome(s, s.Lock, lock, err)
	case "start_acquire":
		ctx, cancel := context.WithCancel(ctx)
		p := &pending{done: make(chan struct{}), cancel: cancel}
		session, options, name := r.sessions[s.Session], r.acquireOptions(s), s.Lock
		go func() {
			defer close(p.done)
			p.lock, p.err = session.Acquire(ctx, name, options)
		}()
		r.pending[s.As] = p
		return result{}, nil
	case "await":
		p := r.pending[s.Acquire]
		select {
		case <-p.done:
		case <-time.After(patience):
			return result{}, fmt.Errorf("no outcome within %v", patience)
		}
		name := ""
		if p.lock != nil {
			name = p.lock.Name()
		}
		return r.outcome(s, name, p.lock, p.err)
	case "cancel":
		p := r.pending[s.Acquire]
		p.cancel()
		select {
		case <-p.done:
		case <-time.After(patience):
			return result{}, fmt.Errorf("the acquire did not return within %v of the cancel", patience)
		}
		if !errors.Is(p.err, context.Canceled) {
			return result{}, fmt.Errorf("the acquire ended before the cancel: %v, %v", p.lock, p.err)
		}
		return result{}, nil
	case "release":
		return result{}, r.grants[s.Grant].Release(ctx)
	case "stop_renewals":
		r.sessions[s.Session].StopRenewals()
		return result{}, nil
	case "pause":
		if r.child == nil || !r.remote[s.Session] {
			return result{}, fmt.Errorf("session %s is not in a child process", s.Session)
		}
		return result{}, r.child.pause(time.Duration(s.Ms) * time.Millisecond)
	case "kill_leader":
		leader, err := r.cl.leader()
		if err != nil {
			return result{}, err
		}
		r.cl.kill(leader)
		return result{}, nil
	case "restart_killed":
		return result{}, r.cl.restartKilled()
	case "watch":
		return result{}, r.watch(s)
	case "expect_lock":
		return result{}, r.expectLock(s)
	case "expect_tokens_increase":
		for i := 1; i < len(s.Grants); i++ {
			if r.tokens[s.Grants[i-1]] >= r.tokens[s.Grants[i]] {
				return result{}, fmt.Errorf("tokens not increasing: %s=%d, %s=%d", s.Grants[i-1], r.tokens[s.Grants[i-1]], s.Grants[i], r.tokens[s.Grants[i]])
			}
		}
		return result{}, nil
	case "fence":
		lock, token := r.locks[s.Grant], r.tokens[s.Grant]
		admitted := token >= r.fences[lock]
		if admitted {
			r.fences[lock] = token
		}
		if admitted != (s.Expect == "admitted") {
			return result{}, fmt.Errorf("fence: token %d admitted=%v, expected %s", token, admitted, s.Expect)
		}
		return result{}, nil
	case "expect_lost":
		lock := r.grants[s.Grant]
		if s.Immediately && lock.Valid() {
			return result{}, fmt.Errorf("the holder's first look says it still holds %s", lock.Name())
		}
		select {
		case <-lock.Lost():
			return result{}, nil
		case <-time.After(patience):
			return result{}, fmt.Errorf("not lost within %v", patience)
		}
	case "expect_lost_before":
		return result{}, r.expectLostBefore(s)
	case "expect_events":
		return result{}, r.expectEvents(s)
	}
	return result{}, fmt.Errorf("unknown op %q", s.Op)
}

func (r *runner) watch(s step) error {
	w, err := r.client.Watch(context.Background(), s.Lock, false)
	if err != nil {
		return err
	}
	rec := &watchRec{w: w}
	started := make(chan struct{})
	go func() {
		first := true
		for {
			event, err := w.Next()
			if err != nil {
				return
			}
			rec.mu.Lock()
			rec.events = append(rec.events, recorded{event, time.Now()})
			rec.mu.Unlock()
			if first {
				// The stream is established: its first line is a resync.
				close(started)
				first = false
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(patience):
		return fmt.Errorf("the watch did not start within %v", patience)
	}
	r.watches[s.As] = rec
	return nil
}

func kindName(k EventKind) string { return strings.ToLower(string(k)) }

func (r *runner) expectLostBefore(s step) error {
	rec, token := r.watches[s.Watch], r.tokens[s.Grant]
	var lost, seen time.Time
	err := eventuallyErr("lost and the event seen", func() error {
		r.lostMu.Lock()
		lost = r.lostAt[s.Grant]
		r.lostMu.Unlock()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, e := range rec.events {
			if kindName(e.event.Kind) == s.Event && e.event.Token == token {
				seen = e.at
			}
		}
		if lost.IsZero() || seen.IsZero() {
			return fmt.Errorf("lost at %v, %s seen at %v", lost, s.Event, seen)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if seen.Before(lost) {
		return fmt.Errorf("the %s event arrived %v before the holder's lost signal", s.Event, lost.Sub(seen))
	}
	return nil
}

func (r *runner) expectEvents(s step) error {
	rec := r.watches[s.Watch]
	return eventuallyErr("the watch's events", func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		i := 0
		for _, e := range rec.events {
			if i < len(s.Events) && kindName(e.event.Kind) == s.Events[i].Kind && e.event.Token == r.tokens[s.Events[i].Grant] {
				i++
			}
		}
		if i < len(s.Events) {
			return fmt.Errorf("matched %d of %d; seen %+v", i, len(s.Events), rec.events)
		}
		return nil
	})
}

func (r *runner) expectLock(s step) error {
	var wantHolders, wantWaiters []uint64
	for _, g := range s.Holders {
		wantHolders = append(wantHolders, r.tokens[g])
	}
	for _, w := range s.Waiters {
		wantWaiters = append(wantWaiters, r.ids[w])
	}
	sort.Slice(wantHolders, func(i, j int) bool { return wantHolders[i] < wantHolders[j] })
	return eventuallyErr("the lock's holders and waiters", func() error {
		holders, waiters, err := lockState(context.Background(), r.client, s.Lock)
		if err != nil {
			return err
		}
		sort.Slice(holders, func(i, j int) bool { return holders[i] < holders[j] })
		if fmt.Sprint(holders) != fmt.Sprint(wantHolders) || fmt.Sprint(waiters) != fmt.Sprint(wantWaiters) {
			return fmt.Errorf("holders %v waiters %v, want %v and %v", holders, waiters, wantHolders, wantWaiters)
		}
		return nil
	})
}

func (r *runner) close() {
	for _, rec := range r.watches {
		rec.w.Close()
	}
	if r.child != nil {
		r.child.stop()
	}
	for _, s := range r.sessions {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.Close(ctx)
		cancel()
	}
}

// actor is the child process that holds a pausable session.
type actor struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startActor(endpoints []string) (*actor, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), actorEnv+"="+strings.Join(endpoints, ","))
	cmd.Stderr = os.Stderr
	dieWithParent(cmd)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &actor{cmd: cmd, in: in, out: bufio.NewScanner(out)}, nil
}

func (a *actor) do(s step) (result, error) {
	line, _ := json.Marshal(s)
	if _, err := a.in.Write(append(line, '\n')); err != nil {
		return result{}, err
	}
	if !a.out.Scan() {
		return result{}, fmt.Errorf("the child process ended: %v", a.out.Err())
	}
	var res result
	if err := json.Unmarshal(a.out.Bytes(), &res); err != nil {
		return result{}, err
	}
	if res.Err != "" {
		return res, fmt.Errorf("in the child process: %s", res.Err)
	}
	return res, nil
}

// pause stops the child for d (SIGSTOP), then resumes it (SIGCONT).
func (a *actor) pause(d time.Duration) error {
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	time.Sleep(d)
	return a.cmd.Process.Signal(syscall.SIGCONT)
}

func (a *actor) stop() {
	a.in.Close()
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
}

// runActor is the child's main: it runs the steps it reads, one JSON line each, and
// answers each with a result line.
func runActor() int {
	client, err := New(Config{Endpoints: strings.Split(os.Getenv(actorEnv), ","), CallTimeout: 3 * time.Second, RetryDeadline: patience})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := newRunner(client, nil, "")
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var s step
		if err := json.Unmarshal(in.Bytes(), &s); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		res, err := r.local(s)
		if err != nil {
			res.Err = err.Error()
		}
		if err := out.Encode(res); err != nil {
			return 1
		}
	}
	r.close()
	return 0
}

func loadScenarios(t *testing.T) []scenario {
	data, err := os.ReadFile("../../conformance/scenarios.json")
	if err != nil {
		t.Fatal(err)
	}
	var file scenarioFile
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if file.Version != 1 {
		t.Fatalf("scenarios.json version %d: this runner knows 1", file.Version)
	}
	return file.Scenarios
}

func runScenario(t *testing.T, c *cluster, sc scenario) {
	client := testClient(t, c.endpoints())
	r := newRunner(client, c, fmt.Sprintf("conformance-go/%s/%d/", sc.Name, time.Now().UnixNano()))
	defer r.close()
	for i, s := range sc.Steps {
		if err := r.exec(s); err != nil {
			if sc.Cluster == "kill" {
				_ = c.restartKilled()
			}
			t.Fatalf("step %d %+v: %v", i, s, err)
		}
	}
}

// TestConformance runs every scenario of the table; the ones that kill a node last.
func TestConformance(t *testing.T) {
	c := needCluster(t)
	scenarios := loadScenarios(t)
	if len(scenarios) < 7 {
		t.Fatalf("the table lost scenarios: %d", len(scenarios))
	}
	sort.SliceStable(scenarios, func(i, j int) bool { return scenarios[i].Cluster == "" && scenarios[j].Cluster != "" })
	for _, sc := range scenarios {
		sc := sc
		t.Run(sc.Name, func(t *testing.T) { runScenario(t, c, sc) })
	}
}
