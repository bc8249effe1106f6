package fencelock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run against a real 3-node cluster of the fencelock binary named by
// FENCELOCK_BIN (the CI step builds it with cargo and sets it), on loopback ports. Every
// process they start they stop by its PID.

// patience bounds every wait-for-condition loop of the tests.
const patience = 60 * time.Second

type node struct {
	id     int
	client string
	peer   string
	cmd    *exec.Cmd
}

type cluster struct {
	bin   string
	dir   string
	peers string
	nodes []*node
	// tls is the clients' TLS configuration when the nodes serve TLS, else nil.
	tls *tls.Config
}

// shared is the cluster of this test run.
var shared *cluster

func TestMain(m *testing.M) {
	if os.Getenv(actorEnv) != "" {
		os.Exit(runActor())
	}
	bin := os.Getenv("FENCELOCK_BIN")
	if bin == "" {
		// The cargo build of the repository this module lives in.
		bin = "../../target/debug/fencelock"
	}
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintln(os.Stderr, "the tests need the fencelock binary: build it (cargo build -p fencelock) or set FENCELOCK_BIN:", err)
		os.Exit(1)
	}
	c, err := startCluster(bin, 3, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the cluster:", err)
		if c != nil {
			c.stop()
		}
		os.Exit(1)
	}
	shared = c
	// The examples read the endpoints as a program would.
	os.Setenv("FENCELOCK_ENDPOINTS", strings.Join(c.endpoints(), ","))
	code := m.Run()
	c.stop()
	if code == 0 {
		os.RemoveAll(c.dir)
	} else {
		fmt.Fprintln(os.Stderr, "node logs kept in", c.dir)
	}
	os.Exit(code)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startCluster starts n nodes; withTLS: their client listeners serve TLS with
// certificates of a throw-away CA (`fencelock certs`).
func startCluster(bin string, n int, withTLS bool) (*cluster, error) {
	dir, err := os.MkdirTemp("", "fencelock-go-test-")
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, dir: dir}
	if withTLS {
		var ids []string
		for i := 1; i <= n; i++ {
			ids = append(ids, fmt.Sprint(i))
		}
		certs := exec.Command(bin, "certs", "--out", filepath.Join(dir, "certs"), "--nodes", strings.Join(ids, ","))
		if out, err := certs.CombinedOutput(); err != nil {
			return c, fmt.Errorf("fencelock certs: %v: %s", err, out)
		}
		ca, err := os.ReadFile(filepath.Join(dir, "certs", "ca.pem"))
		if err != nil {
			return c, err
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(ca)
		c.tls = &tls.Config{RootCAs: roots}
	}
	var peers []string
	for i := 1; i <= n; i++ {
		client, err := freeAddr()
		if err != nil {
			return c, err
		}
		peer, err := freeAddr()
		if err != nil {
			return c, err
		}
		c.nodes = append(c.nodes, &node{id: i, client: client, peer: peer})
		peers = append(peers, fmt.Sprintf("%d=%s", i, peer))
	}
	c.peers = strings.Join(peers, ",")
	for _, nd := range c.nodes {
		if err := c.start(nd); err != nil {
			return c, err
		}
	}
	_, err = c.leader()
	return c, err
}

// start runs node nd (again), on its addresses and data directory.
func (c *cluster) start(nd *node) error {
	logFile, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("node-%d.log", nd.id)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(c.bin, "serve",
		"--id", fmt.Sprint(nd.id),
		"--listen", nd.client,
		"--peer-listen", nd.peer,
		"--no-admin",
		"--data-dir", filepath.Join(c.dir, fmt.Sprintf("data-%d", nd.id)),
		"--peers", c.peers,
		"--heartbeat-ms", "50",
		"--election-timeout-ms", "300",
		"--worker-threads", "1",
	)
	if c.tls != nil {
		certs := filepath.Join(c.dir, "certs")
		cmd.Args = append(cmd.Args,
			"--tls-cert", filepath.Join(certs, fmt.Sprintf("node-%d.pem", nd.id)),
			"--tls-key", filepath.Join(certs, fmt.Sprintf("node-%d.key", nd.id)))
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	nd.cmd = cmd
	return nil
}

// kill stops node nd with SIGKILL and reaps it.
func (c *cluster) kill(nd *node) {
	if nd.cmd == nil {
		return
	}
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = nd.cmd.Process.Wait()
	nd.cmd = nil
}

func (c *cluster) stop() {
	for _, nd := range c.nodes {
		c.kill(nd)
	}
}

func (c *cluster) endpoints() []string {
	var e []string
	for _, nd := range c.nodes {
		e = append(e, nd.client)
	}
	return e
}

// status asks node nd for its view of the cluster.
func (c *cluster) status(nd *node) (*ClusterStatus, error) {
	hc := http.Client{Timeout: 2 * time.Second}
	scheme := "http"
	if c.tls != nil {
		scheme = "https"
		hc.Transport = &http.Transport{TLSClientConfig: c.tls, ForceAttemptHTTP2: true}
	}
	r, err := hc.Get(scheme + "://" + nd.client + "/v1/cluster/status")
	if err != nil {
		return nil, err
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", r.StatusCode)
	}
	var s ClusterStatus
	return &s, json.NewDecoder(r.Body).Decode(&s)
}

// leader waits until every running node agrees on a leader that says it leads.
func (c *cluster) leader() (*node, error) {
	deadline := time.Now().Add(patience)
	for {
		var agreed uint64
		ok := true
		for _, nd := range c.nodes {
			if nd.cmd == nil {
				continue
			}
			s, err := c.status(nd)
			if err != nil || s.LeaderID == 0 || (agreed != 0 && s.LeaderID != agreed) {
				ok = false
				break
			}
			agreed = s.LeaderID
		}
		if ok && agreed != 0 {
			leader := c.nodes[agreed-1]
			if s, err := c.status(leader); leader.cmd != nil && err == nil && s.State == "Leader" {
				return leader, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no agreed leader within %v", patience)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restartKilled starts every stopped node again and waits for an agreed leader.
func (c *cluster) restartKilled() error {
	for _, nd := range c.nodes {
		if nd.cmd == nil {
			if err := c.start(nd); err != nil {
				return err
			}
		}
	}
	_, err := c.leader()
	return err
}

// needCluster is the cluster of this test run.
func needCluster(t *testing.T) *cluster {
	t.Helper()
	if shared == nil {
		t.Fatal("no cluster")
	}
	return shared
}

// testClient is a client of endpoints (of the shared cluster, which serves no TLS).
func testClient(t testing.TB, endpoints []string) *Client {
	return testClientTLS(t, endpoints, nil)
}

func testClientTLS(t testing.TB, endpoints []string, tlsConfig *tls.Config) *Client {
	c, err := New(Config{Endpoints: endpoints, TLS: tlsConfig, CallTimeout: 3 * time.Second, RetryDeadline: patience})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually polls check until it returns nil, failing with its last error after
// patience.
func eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	if err := eventuallyErr(what, check); err != nil {
		t.Fatal(err)
	}
}

func eventuallyErr(what string, check func() error) error {
	deadline := time.Now().Add(patience)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %s: %v", patience, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holders and waiters of a lock, by token and by session id.
func lockState(ctx context.Context, c *Client, name string) ([]uint64, []uint64, error) {
	info, _, err := c.Describe(ctx, name)
	if err != nil || info == nil {
		return nil, nil, err
	}
	var holders, waiters []uint64
	for _, h := range info.Holders {
		holders = append(holders, h.Token)
	}
	for _, w := range info.Waiters {
		waiters = append(waiters, w.SessionID)
	}
	return holders, waiters, nil
}

// singleNode starts a cluster of one node of its own for test t (withTLS: serving TLS),
// stopped when t ends, after the cleanups t registers later (its sessions' closes).
func singleNode(t *testing.T, withTLS bool) *cluster {
	t.Helper()
	c, err := startCluster(needCluster(t).bin, 1, withTLS)
	if c != nil {
		t.Cleanup(func() {
			c.stop()
			if !t.Failed() {
				os.RemoveAll(c.dir)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}
