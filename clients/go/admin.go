package fencelock

import "context"

// The operator's calls of the HTTP/JSON API (docs/http-api.md, "Admin calls"). With auth
// on, they need the admin right: on the lock's prefix for ForceRelease, on "" for
// Sessions and RevokeSession; without it they fail with ErrPermissionDenied.

// ForceRelease releases every grant of lock name, whoever holds it, and returns how many
// it released (0 if no one held it). The holders' next writes carry stale tokens, which
// their fences refuse. One request id serves every retry, so a retried call acts once.
func (c *Client) ForceRelease(ctx context.Context, name string) (uint64, error) {
	req := map[string]string{"name": name, "request_id": newUUID()}
	return c.released(ctx, "/v1/locks/force-release", req)
}

// RevokeSession ends session id at once, as if its lease had run out: its grants are
// released and its waits withdrawn. It returns how many grants it released. One request
// id serves every retry, so a retried call acts once.
func (c *Client) RevokeSession(ctx context.Context, id uint64) (uint64, error) {
	req := map[string]interface{}{"session_id": id, "request_id": newUUID()}
	return c.released(ctx, "/v1/sessions/revoke", req)
}

func (c *Client) released(ctx context.Context, path string, req interface{}) (uint64, error) {
	var resp struct {
		Released uint64 `json:"released"`
	}
	err := c.call(ctx, bounded, path, req, &resp)
	return resp.Released, err
}

// Sessions lists the cluster's live sessions in session id order, at most max of them
// (following the pages), and the revision of the last page (a linearizable read).
func (c *Client) Sessions(ctx context.Context, max int) ([]SessionInfo, uint64, error) {
	var sessions []SessionInfo
	var revision uint64
	var after uint64
	for len(sessions) < max {
		req := map[string]uint64{"start_after": after}
		var resp struct {
			Sessions       []SessionInfo `json:"sessions"`
			NextStartAfter uint64        `json:"next_start_after"`
			Revision       uint64        `json:"revision"`
		}
		if err := c.call(ctx, bounded, "/v1/sessions/list", req, &resp); err != nil {
			return nil, 0, err
		}
		sessions = append(sessions, resp.Sessions...)
		revision = resp.Revision
		if resp.NextStartAfter == 0 {
			break
		}
		after = resp.NextStartAfter
	}
	if len(sessions) > max {
		sessions = sessions[:max]
	}
	return sessions, revision, nil
}
