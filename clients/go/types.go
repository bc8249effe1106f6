package fencelock

// Mode is a lock's mode.
type Mode string

const (
	// Exclusive: one holder at a time (the default).
	Exclusive Mode = "EXCLUSIVE"
	// Shared: any number of shared holders together, none while an exclusive one holds.
	Shared Mode = "SHARED"
)

// Holder is one holder of a lock.
type Holder struct {
	SessionID uint64 `json:"session_id"`
	Token     uint64 `json:"token"`
	Mode      Mode   `json:"mode"`
	Value     []byte `json:"value"`
	ClientID  string `json:"client_id"`
}

// Waiter is one session queued for a lock, in queue order.
type Waiter struct {
	SessionID uint64 `json:"session_id"`
	Mode      Mode   `json:"mode"`
}

// LockInfo is a lock's holders and waiters.
type LockInfo struct {
	Name    string   `json:"name"`
	Holders []Holder `json:"holders"`
	Waiters []Waiter `json:"waiters"`
}

// Member is a node of the cluster.
type Member struct {
	ID         uint64 `json:"id"`
	PeerAddr   string `json:"peer_addr"`
	ClientAddr string `json:"client_addr"`
	Voter      bool   `json:"voter"`
}

// ClusterStatus is one node's view of the cluster.
type ClusterStatus struct {
	NodeID       uint64   `json:"node_id"`
	LeaderID     uint64   `json:"leader_id"`
	LeaderAddr   string   `json:"leader_addr"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	Members      []Member `json:"members"`
	State        string   `json:"state"`
	Sessions     uint64   `json:"sessions"`
	Locks        uint64   `json:"locks"`
	LastToken    uint64   `json:"last_token"`
}

// HeldLock is a lock a session holds, with its grant's token.
type HeldLock struct {
	Name  string `json:"name"`
	Token uint64 `json:"token"`
}

// SessionInfo is one live session of the cluster, as the admin listing shows it.
type SessionInfo struct {
	SessionID uint64 `json:"session_id"`
	ClientID  string `json:"client_id"`
	// TTLMillis is the session's lease TTL in milliseconds.
	TTLMillis uint64     `json:"ttl_ms"`
	Held      []HeldLock `json:"held"`
	// Waiting names the locks the session waits for.
	Waiting []string `json:"waiting"`
}
