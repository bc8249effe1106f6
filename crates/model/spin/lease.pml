/*
 * The lease and fencing protocol of fencelock, for Spin.
 *
 * One holder (client A) holds a lock under a session, with fencing token 1. One waiter
 * (client B) is queued on the same lock: the entry that expires A's session grants it
 * the lock with token 2. A resource keeps the highest token it has seen and refuses a
 * write with a lower one (crates/fence). Between them, NODES servers lead terms
 * 1..NODES in turn (node k-1 leads term k) and decide A's expiry through the log.
 *
 * What README.md in this directory calls "the design" is checked with no -D flag. Each
 * MUTANT_* flag breaks one rule the design relies on; each must produce a
 * counterexample. COVER=n turns a state the search must reach into an assertion that
 * fails when it is reached (a check that the properties are not vacuous).
 *
 * Properties, checked after every step (check()):
 *   (a) the resource never accepts a lower token after a higher one (in admit());
 *   (b) A and B never both believe they hold the lock at the same instant, each by its
 *       own clock.
 */

/* ---------------------------------------------------------------------------------- */
/* Scope and timing. Time passes in real-time ticks, with no horizon: every timer      */
/* holds what is left of it and stops at zero, so the state space is finite. Every     */
/* clock advances by RLO or RHI units in each tick, chosen afresh at every tick and    */
/* for every clock, so over any interval two clocks' rates differ by at most RHI/RLO.  */
/* Durations (TTL, MARGIN) are in clock units. The design is safe when the margin      */
/* covers that rate difference over one TTL: (TTL - MARGIN) * RHI <= TTL * RLO.        */
/* ---------------------------------------------------------------------------------- */
#ifndef NODES
#define NODES 2
#endif
#ifndef RLO
#define RLO 2
#endif
#ifndef RHI
#define RHI 3
#endif
#ifndef TTL
#define TTL 6
#endif
#ifndef MARGIN
#define MARGIN 2
#endif
/* Keepalives A sends in all, besides the open (1 or 2), and writes A and B send. */
#ifndef KA
#define KA 2
#endif
#define WA 1
#define WB 1

/* How long A counts a lease from a keepalive's send (crates/client/src/keepalive.rs:
 * `sent + ttl - margin`). The margin mutant gives one clock unit too little. */
#ifdef MUTANT_MARGIN
#define LEASE (TTL - MARGIN + 1)
#else
#define LEASE (TTL - MARGIN)
#endif

/* A keepalive's life. */
#define K_UNSENT 0
#define K_TO_SERVER 1   /* on its way to a node */
#define K_ARRIVED 2     /* at k_node, waiting for the next quorum round */
#define K_IN_ROUND 3    /* in k_node's running round */
#define K_ANSWER 4      /* an Ok answer on its way to A */
#define K_DONE 5        /* answered, refused or dropped */

/* The waiter. */
#define B_WAITING 0
#define B_GRANT_SENT 1  /* the grant is committed; the answer is on its way to B */
#define B_HOLDS 2       /* B received the grant and believes it holds the lock */

/* ---------------------------------------------------------------------------------- */
/* State                                                                                */
/* ---------------------------------------------------------------------------------- */
/* Client A. a_rem: what is left of its lease on its own clock (0: it no longer believes
 * it holds the lock). k_snd[k]: what an answer to keepalive k would leave, counted on A's
 * clock from the keepalive's send. */
byte a_rem = LEASE;         /* the open: sent at time 0 */
byte a_sent;
byte a_writes;
byte k_state[KA];
byte k_node[KA];
byte k_snd[KA];
byte k_arr[KA];             /* TTL counted on k_node's clock from the keepalive's arrival */

/* The servers. srem[i]: what is left of A's lease on node i's clock. */
byte term = 1;              /* the highest term elected */
bool leading[NODES];        /* believes it leads (a deposed leader goes on believing) */
bool blank[NODES];          /* the blank entry of its term is committed */
bool applied[NODES];        /* it applied A's expiry */
bool has_lease[NODES];      /* A's session is in its lease table */
bool expiring[NODES];       /* it proposed A's expiry; keepalives are refused */
byte srem[NODES];
bool rnd[NODES];            /* a quorum round runs */
bool r_ok[NODES];           /* no later term was elected when it started */
bool r_cov[NODES];          /* the expiry was committed when it started */

/* The log: e_live[i] is node i's uncommitted ExpireSessions entry (a node proposes at
 * most once: it stays `expiring`), e_inlog[i] the latest term whose leader's log holds
 * it. */
bool e_live[NODES];
byte e_inlog[NODES];
byte bct = 1;               /* the latest term whose blank entry is committed */
bool committed;             /* A's expiry, and B's grant with it, is committed */
byte ebb;                   /* the term whose blank entry committed it (0: none) */

/* Client B and the resource. */
byte b_state = B_WAITING;
byte b_writes;
bool w_a;                   /* A's write (token 1) on its way to the resource */
bool w_b;                   /* B's write (token 2) on its way */
byte hi;                    /* the highest token the resource has seen */
byte last_accepted;         /* the token of the last write it accepted */

#ifdef COVER
/* Ghosts for the cover goals only: they cost states. */
bool g_late_renewal;        /* an answer from a later term's leader extended A's lease */
bool g_deposed_ok;          /* a deposed leader answered Ok after a later term began */
bool g_refused;             /* the resource refused A's write after accepting B's */
#endif

/* Temporaries: not part of the state vector. */
hidden byte j;
hidden byte k;
hidden byte d;
hidden byte dn[NODES];

#define sub(x, by) x = (x > by -> x - by : 0)
#define max_into(x, y) x = (y > x -> y : x)

#define A_BELIEVES (a_rem > 0)
#define B_BELIEVES (b_state == B_HOLDS)

#if COVER == 1
#define GOAL (B_BELIEVES && last_accepted == 1)
#elif COVER == 2
#define GOAL g_refused
#elif COVER == 3
#define GOAL (g_late_renewal && B_BELIEVES)
#elif COVER == 4
#define GOAL (ebb > 1 && B_BELIEVES)
#elif COVER == 5
#define GOAL g_deposed_ok
#endif

inline check() {
    /* (b): the holder's belief is by its own clock; B's is over-approximated (it
     * believes from the grant's receipt to the end of the run). */
    assert(!(A_BELIEVES && B_BELIEVES));
#ifdef COVER
    assert(!GOAL);
#endif
}

/* ---------------------------------------------------------------------------------- */
/* Time                                                                                 */
/* ---------------------------------------------------------------------------------- */
proctype Time() {
end:
    do
    :: atomic {
        /* A's clock, which goes on while A is paused or its machine suspended. The
         * suspend mutant lets it stop, as CLOCK_MONOTONIC does on Linux. */
        if
        :: d = RLO
        :: d = RHI
#ifdef MUTANT_SUSPEND
        :: d = 0
#endif
        fi;
        /* The servers' clocks (a node that never led keeps no deadline). */
        for (j : 0 .. NODES - 1) {
            if
            :: leading[j] -> if :: dn[j] = RLO :: dn[j] = RHI fi
            :: else -> dn[j] = 0
            fi
        }
        sub(a_rem, d);
        for (k : 0 .. KA - 1) {
            if
            :: k_state[k] != K_UNSENT && k_state[k] != K_DONE -> sub(k_snd[k], d)
            :: else -> skip
            fi;
            if
            :: k_state[k] == K_ARRIVED || k_state[k] == K_IN_ROUND ->
                sub(k_arr[k], dn[k_node[k]])
            :: else -> skip
            fi
        }
        for (j : 0 .. NODES - 1) {
            if
            :: has_lease[j] -> sub(srem[j], dn[j])
            :: else -> skip
            fi
        }
        printf("tick: A's clock +%d, lease left %d;", d, a_rem);
        for (j : 0 .. NODES - 1) {
            printf(" node %d's clock +%d, lease left %d;", j, dn[j], srem[j])
        }
        printf("\n");
        check()
    }
    od
}

/* ---------------------------------------------------------------------------------- */
/* Client A, the holder. It may pause for as long as it likes: it simply takes no step  */
/* while time goes on. A write it sent while it believed it held the lock may reach the */
/* resource at any later time (a pause between its check and its write is the same).   */
/* ---------------------------------------------------------------------------------- */
inline receive(k) {
#ifdef MUTANT_RECEIPT
    /* Counted from the answer's receipt. */
    max_into(a_rem, LEASE);
#else
    /* Counted from the keepalive's send. A client that takes an answer after its lease
     * ran out is more permissive than crates/client, which ignores it. */
    max_into(a_rem, k_snd[k]);
#endif
#ifdef COVER
    if
    :: k_node[k] > 0 && k_snd[k] > 0 -> g_late_renewal = 1
    :: else -> skip
    fi;
#endif
    printf("A receives Ok for keepalive %d: lease left %d\n", k, a_rem);
    k_state[k] = K_DONE;
    k_snd[k] = 0;
    k_node[k] = 0;
    check()
}

proctype Holder() {
end:
    do
    :: atomic {
        a_sent < KA ->
        printf("A sends keepalive %d\n", a_sent);
        k_state[a_sent] = K_TO_SERVER;
        k_snd[a_sent] = LEASE;
        a_sent++;
        check()
    }
    :: atomic { k_state[0] == K_ANSWER -> receive(0) }
#if KA > 1
    :: atomic { k_state[1] == K_ANSWER -> receive(1) }
#endif
    :: atomic {
        A_BELIEVES && !w_a && a_writes < WA ->
        printf("A writes with token 1\n");
        w_a = 1;
        a_writes++;
        check()
    }
    od
}

/* ---------------------------------------------------------------------------------- */
/* Client B, the waiter: it believes it holds the lock from the grant's receipt on.     */
/* ---------------------------------------------------------------------------------- */
proctype Waiter() {
end:
    do
    :: atomic {
        b_state == B_GRANT_SENT ->
        printf("B receives the grant, token 2\n");
        b_state = B_HOLDS;
        check()
    }
    :: atomic {
        B_BELIEVES && !w_b && b_writes < WB ->
        printf("B writes with token 2\n");
        w_b = 1;
        b_writes++;
        check()
    }
    od
}

/* ---------------------------------------------------------------------------------- */
/* The resource (crates/fence): admits a write whose token is at least the highest it   */
/* has seen, and records it in the same step. Writes may be lost; an undelivered one is */
/* a lost one too.                                                                      */
/* ---------------------------------------------------------------------------------- */
inline admit(tok) {
    if
#ifdef MUTANT_NOFENCE
    :: true ->
#else
    :: tok >= hi ->
#endif
        /* (a) */
        printf("resource accepts token %d\n", tok);
        assert(tok >= last_accepted);
        last_accepted = tok;
        max_into(hi, tok)
    :: else ->
        printf("resource refuses token %d\n", tok);
#ifdef COVER
        if :: tok == 1 && last_accepted == 2 -> g_refused = 1 :: else -> skip fi;
#endif
        skip
    fi
}

proctype Resource() {
end:
    do
    :: atomic { w_a -> admit(1); w_a = 0; check() }
    :: atomic { w_a -> printf("A's write is lost\n"); w_a = 0; check() }
    :: atomic { w_b -> admit(2); w_b = 0; check() }
    od
}

/* ---------------------------------------------------------------------------------- */
/* A server (crates/server/src/leases.rs, barrier.rs, api/locks.rs).                    */
/* ---------------------------------------------------------------------------------- */

/* A keepalive reaches node i. A node that does not believe it leads answers "not
 * leader", which changes nothing: the same as a lost keepalive, so it is not modelled. */
inline arrive(k, i) {
    printf("keepalive %d reaches node %d\n", k, i);
#ifdef MUTANT_NOROUND
    /* Answered at once, with no quorum round. */
    k_node[k] = i;
    k_arr[k] = TTL;
    renew(k, i);
#else
    k_state[k] = K_ARRIVED;
    k_node[k] = i;
    k_arr[k] = TTL;
#endif
    check()
}

/* LeaseClock::renew: the deadline moves to `arrival + ttl` if later; refused while the
 * expiry is proposed or after it was applied (answered "not found": for safety the same
 * as an answer lost, which is what the model does with it). */
inline renew(k, i) {
    if
    :: has_lease[i] && !expiring[i] ->
        max_into(srem[i], k_arr[k]);
        printf("node %d renews keepalive %d: lease left %d; answers Ok\n", i, k, srem[i]);
        k_state[k] = K_ANSWER;
#ifdef COVER
        if :: term > i + 1 -> g_deposed_ok = 1 :: else -> skip fi;
#endif
    :: else ->
        printf("node %d refuses keepalive %d\n", i, k);
        k_state[k] = K_DONE;
        k_snd[k] = 0;
        k_node[k] = 0
    fi;
    k_arr[k] = 0
}

/* openraft's ensure_linearizable: the leader's blank entry is committed and everything
 * committed up to the read index is applied. The read index covers the expiry if it was
 * committed when the round started, or if this node's own blank entry committed it. */
#ifdef MUTANT_NOBLANK
#define BLANK_RULE(i) true
#else
#define BLANK_RULE(i) (blank[i] && (!(r_cov[i] || ebb == i + 1) || applied[i]))
#endif

#define WAITING(k, i) (k_state[k] == K_ARRIVED && k_node[k] == i)

proctype Node(byte i) {
end:
    do
    :: atomic { leading[i] && k_state[0] == K_TO_SERVER -> arrive(0, i) }
#if KA > 1
    :: atomic { leading[i] && k_state[1] == K_TO_SERVER -> arrive(1, i) }
#endif
    /* ReadBarrier: a round covers only the keepalives that arrived before it started;
     * it can confirm leadership only if no later term had been elected by then. */
    :: atomic {
        leading[i] && !rnd[i] && (WAITING(0, i) || WAITING(KA - 1, i)) ->
        rnd[i] = 1;
        r_ok[i] = (term == i + 1);
        r_cov[i] = committed;
        printf("node %d starts a quorum round\n", i);
        for (k : 0 .. KA - 1) {
            if
            :: k_state[k] == K_ARRIVED && k_node[k] == i -> k_state[k] = K_IN_ROUND
            :: else -> skip
            fi
        }
        check()
    }
    /* The round confirms leadership: its keepalives are renewed and answered. */
    :: atomic {
        rnd[i] && r_ok[i] && BLANK_RULE(i) ->
        for (k : 0 .. KA - 1) {
            if
            :: k_state[k] == K_IN_ROUND && k_node[k] == i -> renew(k, i)
            :: else -> skip
            fi
        }
        rnd[i] = 0;
        r_ok[i] = 0;
        r_cov[i] = 0;
        check()
    }
    /* The round fails (a quorum is unreachable, or has moved to a later term): no
     * renewal, no answer. Possible for any round. */
    :: atomic {
        rnd[i] ->
        printf("node %d's round fails\n", i);
        for (k : 0 .. KA - 1) {
            if
            :: k_state[k] == K_IN_ROUND && k_node[k] == i ->
                k_state[k] = K_DONE;
                k_snd[k] = 0;
                k_arr[k] = 0;
                k_node[k] = 0
            :: else -> skip
            fi
        }
        rnd[i] = 0;
        r_ok[i] = 0;
        r_cov[i] = 0;
        check()
    }
    /* LeaseClock::take_expired: the deadline passed on this node's clock; it proposes
     * ExpireSessions and refuses keepalives from now on. After a later term's blank
     * entry committed, an entry a deposed leader appends can never commit. */
    :: atomic {
        leading[i] && has_lease[i] && !expiring[i] && srem[i] == 0 && !committed ->
        printf("node %d's deadline passed: it proposes the expiry\n", i);
        expiring[i] = 1;
        if
        :: i + 1 >= bct -> e_live[i] = 1; e_inlog[i] = i + 1
        :: else -> skip
        fi;
        check()
    }
    /* Apply the committed expiry (modelled on nodes that lead: a node takes over with
     * it not applied yet, the worst case). */
    :: atomic {
        leading[i] && committed && !applied[i] ->
        printf("node %d applies the expiry\n", i);
        applied[i] = 1;
        has_lease[i] = 0;
        srem[i] = 0;
        expiring[i] = 0;
        check()
    }
    od
}

/* ---------------------------------------------------------------------------------- */
/* Raft, as far as A's expiry goes.                                                     */
/* ---------------------------------------------------------------------------------- */
inline commit_expiry() {
    printf("the expiry commits; it grants the lock to B\n");
    committed = 1;
    for (j : 0 .. NODES - 1) {
        e_live[j] = 0;
        e_inlog[j] = 0
    }
    /* The same entry grants the lock to B with the next token. */
    b_state = B_GRANT_SENT
}

proctype Raft() {
end:
    do
    /* The current leader commits its blank entry, and with it every entry of an earlier
     * term in its log; entries of earlier terms not in its log can never commit now. */
    :: atomic {
        !blank[term - 1] ->
        printf("term %d's blank entry commits\n", term);
        blank[term - 1] = 1;
        bct = term;
        for (j : 0 .. NODES - 1) {
            if
            :: e_live[j] && j + 1 < term && e_inlog[j] == term && !committed ->
                ebb = term;
                commit_expiry()
            :: e_live[j] && j + 1 < term && e_inlog[j] != term ->
                e_live[j] = 0;
                e_inlog[j] = 0
            :: else -> skip
            fi
        }
        check()
    }
    /* The current leader commits its own term's entry. */
    :: atomic { e_live[term - 1] && blank[term - 1] -> commit_expiry(); check() }
    /* The next term's leader is elected: a full TTL from its takeover for every session
     * it has (LeaseClock::become_leader), and each uncommitted entry is in its log or
     * not. */
    :: atomic {
        term < NODES ->
        term++;
        printf("node %d is elected for term %d: a full TTL\n", term - 1, term);
        leading[term - 1] = 1;
        has_lease[term - 1] = !applied[term - 1];
        srem[term - 1] = (has_lease[term - 1] -> TTL : 0);
        for (j : 0 .. NODES - 1) {
            if
            :: e_live[j] ->
                if
                :: e_inlog[j] = term;
                    printf("node %d's expiry entry is in the new leader's log\n", j)
                :: skip
                fi
            :: else -> skip
            fi
        }
        check()
    }
    od
}

init {
    atomic {
        /* Node 0 leads term 1, its blank entry committed, and applied A's OpenSession
         * at time 0: a full TTL. */
        leading[0] = 1;
        blank[0] = 1;
        has_lease[0] = 1;
        srem[0] = TTL;
        check();
        /* Everything starts from that state. */
        run Time();
        run Holder();
        run Waiter();
        run Resource();
        run Raft();
        for (j : 0 .. NODES - 1) {
            run Node(j)
        }
    }
}
