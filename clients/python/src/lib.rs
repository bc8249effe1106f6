//! `fencelock._native`: the Rust client (`fencelock-client`) seen from Python.
//!
//! Everything that matters for a lock's safety (keepalives, send-time lease accounting,
//! redirects, retries with request ids, cancel-safe acquires) is the Rust client's; this
//! module only runs its futures and hands the results to Python. The Python package
//! (`python/fencelock`) builds the sync and asyncio APIs on two primitives:
//!
//! - [`Op`]: one call of the Rust client, running on the process's tokio runtime. Python
//!   waits for it (blocking, with the GIL released, or from asyncio through a done
//!   callback) and takes its result once; `cancel` drops the future, which is how the Rust
//!   client withdraws a wait.
//! - [`Stream`]: a stream of results (watch events, election leaders), read one [`Op`]
//!   at a time.
//!
//! # Fork
//!
//! A forked child has none of its parent's threads, so the parent's runtime and every
//! connection, session and lock made on it are dead weight there. The runtime is per
//! process (a child builds its own on first use), and every object made here remembers
//! the process that made it ([`Owned`]): in another process it refuses to be used
//! (`ForkedError`) and, when Python drops it, is leaked rather than dropped, because
//! dropping it would spawn a release on, or lock a mutex of, the parent's runtime that no
//! thread in the child will ever serve. The parent's locks therefore stay the parent's.

use fencelock_client as fl;
use fencelock_client::election::{self, Election, Leadership};
use futures::stream::BoxStream;
use futures::{Future, StreamExt};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Turns a Rust result into a Python object, on a thread attached to Python.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// What a finished [`Op`] holds until Python takes it.
enum Outcome {
    Ok(Convert),
    Err(fl::Error),
    /// Python cancelled the op before it finished.
    Cancelled,
    /// Python took the outcome already.
    Taken,
}

// ---------------------------------------------------------------------------------------
// The per-process runtime and fork detection

/// The runtime of this process, and the pid that built it. Locked only by threads
/// attached to Python (never by the runtime's own threads), so no thread can hold it
/// across a `fork()`: the forking thread holds the GIL.
static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);

/// Worker threads of the runtime: the client's work is I/O and small messages.
const WORKER_THREADS: usize = 2;

fn runtime() -> PyResult<Arc<tokio::runtime::Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((owner, runtime)) = slot.as_ref() {
        if *owner == pid {
            return Ok(runtime.clone());
        }
    }
    // A runtime inherited through fork(): its threads are not in this process, and
    // dropping it would wait for them forever.
    if let Some(inherited) = slot.take() {
        std::mem::forget(inherited);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("fencelock")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))?;
    let runtime = Arc::new(runtime);
    *slot = Some((pid, runtime.clone()));
    Ok(runtime)
}

/// A value that belongs to the process that made it (see the module docs, "Fork").
struct Owned<T> {
    pid: u32,
    value: Option<T>,
}

impl<T> Owned<T> {
    fn new(value: T) -> Owned<T> {
        Owned {
            pid: std::process::id(),
            value: Some(value),
        }
    }

    fn get(&self, py: Python<'_>) -> PyResult<&T> {
        if self.pid != std::process::id() {
            return Err(error(
                py,
                "ForkedError",
                "this object was made before fork() in the parent process; make a new one \
                 in this process (a Client reconnects by itself)",
                None,
            ));
        }
        Ok(self.value.as_ref().expect("present until dropped"))
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            if self.pid != std::process::id() {
                std::mem::forget(value);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// An instance of exception class `class` of `fencelock.errors`.
fn error(py: Python<'_>, class: &str, message: &str, details: Option<Bound<'_, PyDict>>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import("fencelock.errors")?.getattr(class)?;
        let value = class.call((message,), details.as_ref())?;
        Ok(PyErr::from_value(value))
    };
    build().unwrap_or_else(|e| e)
}

/// The Rust client's error as the `fencelock.errors` exception of its reason.
fn client_error(py: Python<'_>, err: fl::Error) -> PyErr {
    use fl::Error as E;
    let message = err.to_string();
    let details = PyDict::new(py);
    let set = |key: &str, value: Py<PyAny>| {
        let _ = details.set_item(key, value);
    };
    let class = match &err {
        E::NotLeader { leader_addr, .. } => {
            set(
                "leader_addr",
                leader_addr.clone().into_py_any(py).unwrap_or(py.None()),
            );
            "NotLeader"
        }
        E::NoLeader(_) => "NoLeader",
        E::SessionNotFound(_) => "SessionNotFound",
        E::SessionLost(reason) => {
            set(
                "lost_reason",
                lost_reason(*reason).into_py_any(py).unwrap_or(py.None()),
            );
            "SessionLost"
        }
        E::InvalidName(_) => "InvalidName",
        E::InvalidTtl(_) => "InvalidTtl",
        E::ValueTooLarge(_) => "ValueTooLarge",
        E::NotHeld(_) => "NotHeld",
        E::StaleToken(_) => "StaleToken",
        E::AlreadyHeldOrQueued(_) => "AlreadyHeldOrQueued",
        E::LimitReached { limit, .. } => {
            set("limit", limit.clone().into_py_any(py).unwrap_or(py.None()));
            "LimitReached"
        }
        E::RequestTooOld(_) => "RequestTooOld",
        E::TokenOverflow(_) => "TokenOverflow",
        E::NotWaiting(_) => "NotWaiting",
        E::InvalidArgument(_) => "InvalidArgument",
        E::Membership(_) => "MembershipError",
        E::Internal(_) => "InternalError",
        E::Unauthenticated(_) => "Unauthenticated",
        E::PermissionDenied(_) => "PermissionDenied",
        E::Auth(_) => "AuthError",
        E::NoSpace(_) => "NoSpace",
        E::Unavailable {
            outcome_unknown, ..
        } => {
            set(
                "outcome_unknown",
                outcome_unknown.into_py_any(py).unwrap_or(py.None()),
            );
            "Unavailable"
        }
        E::Timeout {
            elapsed,
            outcome_unknown,
        } => {
            set(
                "outcome_unknown",
                outcome_unknown.into_py_any(py).unwrap_or(py.None()),
            );
            set(
                "elapsed",
                elapsed.as_secs_f64().into_py_any(py).unwrap_or(py.None()),
            );
            "Timeout"
        }
        E::Config(_) => "ConfigError",
        E::Status { code, .. } => {
            set(
                "code",
                format!("{code:?}").into_py_any(py).unwrap_or(py.None()),
            );
            "StatusError"
        }
        _ => "FencelockError",
    };
    error(py, class, &message, Some(details))
}

fn lost_reason(reason: fl::LostReason) -> &'static str {
    match reason {
        fl::LostReason::LeaseExpired => "lease_expired",
        fl::LostReason::SessionNotFound => "session_not_found",
        fl::LostReason::Closed => "closed",
        _ => "lost",
    }
}

fn seconds(what: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a finite number of seconds >= 0, not {value}"
        ))
    })
}

fn opt_seconds(what: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value.map(|v| seconds(what, v)).transpose()
}

// ---------------------------------------------------------------------------------------
// Op

struct OpState {
    /// `None` while running; the waiting callbacks live beside it.
    outcome: Option<Outcome>,
    callbacks: Vec<Py<PyAny>>,
}

struct OpShared {
    state: Mutex<OpState>,
    finished: Condvar,
}

impl OpShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settle the op with `outcome` unless it is settled already (a cancel and the
    /// future's end race); then run the callbacks. Returns whether this call settled it.
    fn settle(&self, outcome: Outcome) -> bool {
        let callbacks = {
            let mut state = self.lock();
            if state.outcome.is_some() {
                return false;
            }
            state.outcome = Some(outcome);
            self.finished.notify_all();
            std::mem::take(&mut state.callbacks)
        };
        if !callbacks.is_empty() {
            let run = |py: Python<'_>| {
                for callback in callbacks {
                    if let Err(e) = callback.call0(py) {
                        e.write_unraisable(py, None);
                    }
                }
            };
            // At interpreter shutdown there is no one left to call (and nothing to
            // decref them with): leak them.
            let mut run = Some(run);
            if Python::try_attach(|py| (run.take().expect("once"))(py)).is_none() {
                std::mem::forget(run);
            }
        }
        true
    }
}

/// One running call of the Rust client. Wait for it (`wait`, blocking with the GIL
/// released, or `add_done_callback`), then take its `result` once. `cancel` drops the
/// call's future: a cancelled acquire is withdrawn on the server by the Rust client.
#[pyclass(module = "fencelock._native", frozen)]
struct Op {
    shared: Owned<Arc<OpShared>>,
    abort: Owned<tokio::task::AbortHandle>,
}

/// Run `future` on the process's runtime as an [`Op`].
fn spawn_op<F>(future: F) -> PyResult<Op>
where
    F: Future<Output = Result<Convert, fl::Error>> + Send + 'static,
{
    let runtime = runtime()?;
    let shared = Arc::new(OpShared {
        state: Mutex::new(OpState {
            outcome: None,
            callbacks: Vec::new(),
        }),
        finished: Condvar::new(),
    });
    let settle = shared.clone();
    let task = runtime.spawn(async move {
        let outcome = match future.await {
            Ok(convert) => Outcome::Ok(convert),
            Err(e) => Outcome::Err(e),
        };
        settle.settle(outcome);
    });
    Ok(Op {
        shared: Owned::new(shared),
        abort: Owned::new(task.abort_handle()),
    })
}

/// An op that converts `value` with `convert` once it is there.
fn op_of<T, F>(future: F, convert: fn(Python<'_>, T) -> PyResult<Py<PyAny>>) -> PyResult<Op>
where
    T: Send + 'static,
    F: Future<Output = fl::Result<T>> + Send + 'static,
{
    spawn_op(async move {
        let value = future.await?;
        Ok(Box::new(move |py: Python<'_>| convert(py, value)) as Convert)
    })
}

/// Slices of a blocking wait, between which Python's signal handlers run (Ctrl-C).
const WAIT_SLICE: Duration = Duration::from_millis(50);

#[pymethods]
impl Op {
    /// Whether the op finished (or was cancelled).
    fn done(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.shared.get(py)?.lock().outcome.is_some())
    }

    /// Block until the op finishes or `timeout` seconds pass (`None`: no limit), with
    /// the GIL released; returns whether it finished. Signal handlers run meanwhile, so
    /// Ctrl-C raises `KeyboardInterrupt` here.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let shared = self.shared.get(py)?.clone();
        let deadline = opt_seconds("timeout", timeout)?.map(|t| Instant::now() + t);
        loop {
            let slice = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            let finished = py.detach(|| {
                let state = shared.lock();
                let (state, _) = shared
                    .finished
                    .wait_timeout_while(state, slice, |s| s.outcome.is_none())
                    .unwrap_or_else(|e| e.into_inner());
                state.outcome.is_some()
            });
            if finished {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Call `callback()` (no arguments) once the op finishes: at once if it has, else on
    /// a runtime thread. It must not block; asyncio passes one that wakes its loop.
    fn add_done_callback(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        let shared = self.shared.get(py)?;
        {
            let mut state = shared.lock();
            if state.outcome.is_none() {
                state.callbacks.push(callback);
                return Ok(());
            }
        }
        callback.call0(py)?;
        Ok(())
    }

    /// Cancel the op: its future is dropped (a cancelled acquire is withdrawn on the
    /// server, and a grant that raced the cancel released). Returns whether this
    /// cancelled it (false when it had finished).
    fn cancel(&self, py: Python<'_>) -> PyResult<bool> {
        let shared = self.shared.get(py)?;
        self.abort.get(py)?.abort();
        Ok(py.detach(|| shared.settle(Outcome::Cancelled)))
    }

    /// The op's value, or its error raised. Only once, and only when it finished.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let outcome = {
            let mut state = self.shared.get(py)?.lock();
            match state.outcome.as_mut() {
                None => return Err(PyRuntimeError::new_err("the operation has not finished")),
                Some(outcome) => std::mem::replace(outcome, Outcome::Taken),
            }
        };
        match outcome {
            Outcome::Ok(convert) => convert(py),
            Outcome::Err(e) => Err(client_error(py, e)),
            Outcome::Cancelled => Err(error(py, "Cancelled", "the operation was cancelled", None)),
            Outcome::Taken => Err(PyRuntimeError::new_err("the result was taken already")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Streams

type Items = BoxStream<'static, fl::Result<Convert>>;

/// A stream of results (watch events, leaders), read with `next`.
#[pyclass(module = "fencelock._native", frozen)]
struct Stream {
    inner: Owned<Arc<tokio::sync::Mutex<Option<Items>>>>,
}

impl Stream {
    fn new(items: Items) -> Stream {
        Stream {
            inner: Owned::new(Arc::new(tokio::sync::Mutex::new(Some(items)))),
        }
    }
}

#[pymethods]
impl Stream {
    /// An op whose result is `(True, item)`, or `(False, None)` once the stream ended.
    fn next(&self, py: Python<'_>) -> PyResult<Op> {
        let inner = self.inner.get(py)?.clone();
        spawn_op(async move {
            let mut items = inner.lock().await;
            let next = match items.as_mut() {
                Some(items) => items.next().await,
                None => None,
            };
            match next {
                Some(item) => {
                    let convert = item?;
                    Ok(
                        Box::new(move |py: Python<'_>| (true, convert(py)?).into_py_any(py))
                            as Convert,
                    )
                }
                None => {
                    Ok(Box::new(|py: Python<'_>| (false, py.None()).into_py_any(py)) as Convert)
                }
            }
        })
    }

    /// Stop the stream (its server-side watch ends); a pending `next` ends it too.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.get(py)?.clone();
        runtime()?.spawn(async move {
            inner.lock().await.take();
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Conversions of the client's data (plain dicts; the Python package wraps them)

fn mode_name(mode: fl::LockMode) -> &'static str {
    match mode {
        fl::LockMode::Exclusive => "exclusive",
        fl::LockMode::Shared => "shared",
    }
}

fn lock_info(py: Python<'_>, info: fl::LockInfo) -> PyResult<Py<PyAny>> {
    let holders = PyList::empty(py);
    for h in info.holders {
        let holder = PyDict::new(py);
        holder.set_item("session_id", h.session_id.0)?;
        holder.set_item("token", h.token.0)?;
        holder.set_item("mode", mode_name(h.mode))?;
        holder.set_item("value", PyBytes::new(py, &h.value))?;
        holder.set_item("client_id", h.client_id.map(|id| id.to_string()))?;
        holders.append(holder)?;
    }
    let waiters = PyList::empty(py);
    for w in info.waiters {
        let waiter = PyDict::new(py);
        waiter.set_item("session_id", w.session_id.0)?;
        waiter.set_item("mode", mode_name(w.mode))?;
        waiters.append(waiter)?;
    }
    let dict = PyDict::new(py);
    dict.set_item("name", info.name)?;
    dict.set_item("holders", holders)?;
    dict.set_item("waiters", waiters)?;
    dict.into_py_any(py)
}

fn watch_event(py: Python<'_>, event: fl::WatchEvent) -> PyResult<Py<PyAny>> {
    use fl::WatchEvent as W;
    let dict = PyDict::new(py);
    dict.set_item("revision", event.revision())?;
    dict.set_item("name", event.name())?;
    dict.set_item("token", event.token().map(|t| t.0))?;
    let (kind, session_id) = match &event {
        W::Acquired {
            session_id,
            mode,
            value,
            ..
        } => {
            dict.set_item("mode", mode_name(*mode))?;
            dict.set_item("value", PyBytes::new(py, value))?;
            ("acquired", Some(session_id.0))
        }
        W::Released { session_id, .. } => ("released", Some(session_id.0)),
        W::Expired { session_id, .. } => ("expired", Some(session_id.0)),
        W::Forced { session_id, .. } => ("forced", Some(session_id.0)),
        W::SessionClosed { session_id, .. } => ("session_closed", Some(session_id.0)),
        W::Revoked { session_id, .. } => ("revoked", Some(session_id.0)),
        W::LockDelayStarted { delay, .. } => {
            dict.set_item("delay", delay.as_secs_f64())?;
            ("lock_delay_started", None)
        }
        W::LockDelayEnded { .. } => ("lock_delay_ended", None),
        W::ValueChanged {
            session_id, value, ..
        } => {
            dict.set_item("value", PyBytes::new(py, value))?;
            ("value_changed", Some(session_id.0))
        }
        W::Resync { .. } => ("resync", None),
        other => (other.kind(), other.session_id().map(|s| s.0)),
    };
    dict.set_item("kind", kind)?;
    dict.set_item("session_id", session_id)?;
    dict.into_py_any(py)
}

fn leader(py: Python<'_>, leader: Option<election::Leader>) -> PyResult<Py<PyAny>> {
    let Some(leader) = leader else {
        return Ok(py.None());
    };
    let dict = PyDict::new(py);
    dict.set_item("session_id", leader.session_id.0)?;
    dict.set_item("token", leader.token.0)?;
    dict.set_item("value", PyBytes::new(py, &leader.value))?;
    dict.into_py_any(py)
}

fn status(py: Python<'_>, status: fl::ClusterStatus) -> PyResult<Py<PyAny>> {
    let members = PyList::empty(py);
    for m in status.members {
        let member = PyDict::new(py);
        member.set_item("id", m.id)?;
        member.set_item("peer_addr", m.peer_addr)?;
        member.set_item("client_addr", m.client_addr)?;
        member.set_item("voter", m.voter)?;
        members.append(member)?;
    }
    let dict = PyDict::new(py);
    dict.set_item("node_id", status.node_id)?;
    dict.set_item("leader_id", status.leader_id)?;
    dict.set_item("leader_addr", status.leader_addr)?;
    dict.set_item("term", status.term)?;
    dict.set_item("commit_index", status.commit_index)?;
    dict.set_item("applied_index", status.applied_index)?;
    dict.set_item("members", members)?;
    dict.set_item("state", status.state)?;
    dict.set_item("sessions", status.sessions)?;
    dict.set_item("locks", status.locks)?;
    dict.set_item("last_token", status.last_token)?;
    dict.into_py_any(py)
}

fn none(py: Python<'_>, (): ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

// ---------------------------------------------------------------------------------------
// Client

/// A connection to a cluster (the Rust `fencelock_client::Client`).
#[pyclass(module = "fencelock._native", frozen)]
struct Client {
    inner: Owned<fl::Client>,
}

/// Connect to the cluster at `endpoints`; an op whose result is a [`Client`].
#[pyfunction]
#[pyo3(signature = (
    endpoints, *, connect_timeout=None, call_timeout=None, retry_deadline=None,
    keepalive_safety_margin=None, keepalive_interval=None, withdraw_deadline=None,
    tls_ca=None, tls_cert=None, tls_key=None, tls_domain=None,
    user=None, password=None, bearer=None,
))]
#[allow(clippy::too_many_arguments)]
fn connect(
    py: Python<'_>,
    endpoints: Vec<String>,
    connect_timeout: Option<f64>,
    call_timeout: Option<f64>,
    retry_deadline: Option<f64>,
    keepalive_safety_margin: Option<f64>,
    keepalive_interval: Option<f64>,
    withdraw_deadline: Option<f64>,
    tls_ca: Option<Vec<u8>>,
    tls_cert: Option<Vec<u8>>,
    tls_key: Option<Vec<u8>>,
    tls_domain: Option<String>,
    user: Option<String>,
    password: Option<String>,
    bearer: Option<String>,
) -> PyResult<Op> {
    let mut builder = fl::ClientBuilder::new(endpoints);
    if let Some(t) = opt_seconds("connect_timeout", connect_timeout)? {
        builder = builder.connect_timeout(t);
    }
    if let Some(t) = opt_seconds("call_timeout", call_timeout)? {
        builder = builder.call_timeout(t);
    }
    if let Some(t) = opt_seconds("retry_deadline", retry_deadline)? {
        builder = builder.retry_deadline(t);
    }
    if let Some(t) = opt_seconds("keepalive_safety_margin", keepalive_safety_margin)? {
        builder = builder.keepalive_safety_margin(t);
    }
    if let Some(t) = opt_seconds("keepalive_interval", keepalive_interval)? {
        builder = builder.keepalive_interval(t);
    }
    if let Some(t) = opt_seconds("withdraw_deadline", withdraw_deadline)? {
        builder = builder.withdraw_deadline(t);
    }
    match (tls_ca, tls_cert, tls_key) {
        (Some(ca), cert, key) => {
            let identity = match (&cert, &key) {
                (Some(cert), Some(key)) => Some((cert.as_slice(), key.as_slice())),
                (None, None) => None,
                _ => {
                    return Err(error(
                        py,
                        "ConfigError",
                        "tls_cert and tls_key go together",
                        None,
                    ));
                }
            };
            builder = builder.tls(ca, identity, tls_domain.as_deref());
        }
        (None, None, None) if tls_domain.is_none() => {}
        _ => return Err(error(py, "ConfigError", "TLS options need tls_ca", None)),
    }
    match (user, password, bearer) {
        (Some(user), Some(password), None) => builder = builder.credentials(&user, &password),
        (None, None, Some(bearer)) => builder = builder.bearer(&bearer),
        (None, None, None) => {}
        _ => {
            return Err(error(
                py,
                "ConfigError",
                "give either user and password, or bearer",
                None,
            ));
        }
    }
    op_of(builder.connect(), |py, client| {
        Ok(Py::new(
            py,
            Client {
                inner: Owned::new(client),
            },
        )?
        .into_any())
    })
}

#[pymethods]
impl Client {
    /// Open a session (a lease kept alive in the background); an op of a [`Session`].
    #[pyo3(signature = (ttl, keepalive_interval=None, safety_margin=None))]
    fn session(
        &self,
        py: Python<'_>,
        ttl: f64,
        keepalive_interval: Option<f64>,
        safety_margin: Option<f64>,
    ) -> PyResult<Op> {
        let client = self.inner.get(py)?.clone();
        let mut options = fl::SessionOptions::new(seconds("ttl", ttl)?);
        if let Some(interval) = opt_seconds("keepalive_interval", keepalive_interval)? {
            options = options.keepalive_interval(interval);
        }
        if let Some(margin) = opt_seconds("safety_margin", safety_margin)? {
            options = options.safety_margin(margin);
        }
        op_of(
            async move { client.session_with(options).await },
            |py, session| {
                Ok(Py::new(
                    py,
                    Session {
                        inner: Owned::new(session),
                    },
                )?
                .into_any())
            },
        )
    }

    /// An op of `(lock info dict or None, revision)`.
    fn describe(&self, py: Python<'_>, name: String) -> PyResult<Op> {
        let client = self.inner.get(py)?.clone();
        op_of(async move { client.describe(&name).await }, |py, d| {
            let lock = match d.lock {
                Some(info) => lock_info(py, info)?,
                None => py.None(),
            };
            (lock, d.revision).into_py_any(py)
        })
    }

    /// An op of a list of lock info dicts, names starting with `prefix`, at most `limit`.
    fn list(&self, py: Python<'_>, prefix: String, limit: usize) -> PyResult<Op> {
        let client = self.inner.get(py)?.clone();
        op_of(
            async move { client.list(&prefix, limit).await },
            |py, locks| {
                let list = PyList::empty(py);
                for info in locks {
                    list.append(lock_info(py, info)?)?;
                }
                list.into_py_any(py)
            },
        )
    }

    /// An op of `(current, current_token or None)`.
    fn verify(&self, py: Python<'_>, name: String, token: u64) -> PyResult<Op> {
        let client = self.inner.get(py)?.clone();
        op_of(
            async move { client.verify(&name, fl::FencingToken(token)).await },
            |py, v| (v.current, v.current_token.map(|t| t.0)).into_py_any(py),
        )
    }

    /// An op of the answering node's status dict.
    fn status(&self, py: Python<'_>) -> PyResult<Op> {
        let client = self.inner.get(py)?.clone();
        op_of(async move { client.status().await }, status)
    }

    /// An op of the number of grants released by force.
    fn force_release(&self, py: Python<'_>, name: String) -> PyResult<Op> {
        let client = self.inner.get(py)?.clone();
        op_of(async move { client.force_release(&name).await }, |py, n| {
            n.into_py_any(py)
        })
    }

    /// Watch lock `name` (or every lock starting with it, with `prefix`): a stream of
    /// event dicts.
    fn watch(&self, py: Python<'_>, name: String, prefix: bool) -> PyResult<Stream> {
        let client = self.inner.get(py)?.clone();
        let stream = if prefix {
            client.watch_prefix(&name)
        } else {
            client.watch(&name)
        };
        Ok(Stream::new(
            stream
                .map(|event| {
                    event.map(|e| Box::new(move |py: Python<'_>| watch_event(py, e)) as Convert)
                })
                .boxed(),
        ))
    }

    /// An op of the leader dict of election `name`, or None.
    fn leader(&self, py: Python<'_>, name: String) -> PyResult<Op> {
        let client = self.inner.get(py)?.clone();
        op_of(
            async move { election::leader(&client, &name).await },
            leader,
        )
    }

    /// The leaders of election `name`, the current one first: a stream of leader dicts
    /// or None.
    fn observe(&self, py: Python<'_>, name: String) -> PyResult<Stream> {
        let client = self.inner.get(py)?.clone();
        let stream = election::observe(&client, &name);
        Ok(Stream::new(
            stream
                .map(|item| item.map(|l| Box::new(move |py: Python<'_>| leader(py, l)) as Convert))
                .boxed(),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Session

/// A session (the Rust `fencelock_client::Session`).
#[pyclass(module = "fencelock._native", frozen)]
struct Session {
    inner: Owned<fl::Session>,
}

#[pymethods]
impl Session {
    #[getter]
    fn id(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.inner.get(py)?.id().0)
    }

    #[getter]
    fn ttl(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.inner.get(py)?.ttl().as_secs_f64())
    }

    #[getter]
    fn client_id(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.inner.get(py)?.client_id().to_string())
    }

    /// Whether the session is lost, checked against the lease clock now (true at the
    /// first look after the process was stopped past its lease, before any timer ran).
    fn is_lost(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.inner.get(py)?.is_lost())
    }

    /// Stop renewing the lease without closing the session, as a hung process would:
    /// the lost signal fires, then the cluster expires the session.
    fn stop_keepalive(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.get(py)?.stop_keepalive();
        Ok(())
    }

    fn lease_remaining(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.inner.get(py)?.lease_remaining().as_secs_f64())
    }

    /// An op of the lost reason, finishing when the session is lost.
    fn lost(&self, py: Python<'_>) -> PyResult<Op> {
        let lost = self.inner.get(py)?.lost();
        op_of(async move { Ok(lost.await) }, |py, r| {
            lost_reason(r).into_py_any(py)
        })
    }

    /// Take lock `name`: an op of a [`Lock`], or the string "would_block" (not
    /// `blocking`) or "timed_out" (`timeout` seconds passed; the cluster withdrew the
    /// wait).
    #[pyo3(signature = (name, shared=false, blocking=true, timeout=None, value=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        name: String,
        shared: bool,
        blocking: bool,
        timeout: Option<f64>,
        value: Option<Vec<u8>>,
    ) -> PyResult<Op> {
        let session = self.inner.get(py)?.clone();
        let holder = session.clone();
        let wait = match (blocking, opt_seconds("timeout", timeout)?) {
            (false, _) => fl::Wait::NoWait,
            (true, Some(timeout)) => fl::Wait::Timeout(timeout),
            (true, None) => fl::Wait::Forever,
        };
        let options = fl::AcquireOptions::exclusive()
            .mode(if shared {
                fl::LockMode::Shared
            } else {
                fl::LockMode::Exclusive
            })
            .wait(wait)
            .value(value.unwrap_or_default());
        op_of(
            async move {
                let acquisition = session.acquire(&name, options).await?;
                Ok((acquisition, holder))
            },
            |py, (acquisition, holder)| match acquisition {
                fl::Acquisition::Granted(guard) => {
                    Ok(Py::new(py, Lock::new(Held::Lock(guard), holder))?.into_any())
                }
                fl::Acquisition::WouldBlock => "would_block".into_py_any(py),
                fl::Acquisition::TimedOut => "timed_out".into_py_any(py),
            },
        )
    }

    /// Campaign in election `name` with `value` (waits until leading): an op of a
    /// [`Lock`] whose `release` resigns.
    fn campaign(&self, py: Python<'_>, name: String, value: Vec<u8>) -> PyResult<Op> {
        let session = self.inner.get(py)?.clone();
        let election = Election::new(&session, name);
        op_of(
            async move { Ok((election.campaign(value).await?, session)) },
            |py, (leadership, session)| {
                Ok(Py::new(py, Lock::new(Held::Lead(leadership), session))?.into_any())
            },
        )
    }

    /// End the session (its locks are released, its waits dropped).
    fn close(&self, py: Python<'_>) -> PyResult<Op> {
        let session = self.inner.get(py)?.clone();
        op_of(session.close(), none)
    }
}

// ---------------------------------------------------------------------------------------
// Lock

enum Held {
    Lock(fl::LockGuard),
    Lead(Leadership),
}

struct LockInner {
    name: String,
    token: u64,
    shared: bool,
    session_id: u64,
    lost: fl::Lost,
    /// The holding session, for a look at its lease without waiting.
    session: fl::Session,
    /// `None` once released.
    held: Mutex<Option<Held>>,
}

/// A held lock (the Rust `fencelock_client::LockGuard`, or an election's
/// `Leadership`). Dropped unreleased, it is released in the background.
#[pyclass(module = "fencelock._native", frozen)]
struct Lock {
    inner: Owned<LockInner>,
}

impl Lock {
    fn new(held: Held, session: fl::Session) -> Lock {
        let (name, token, shared, session_id, lost) = match &held {
            Held::Lock(guard) => (
                guard.name().to_string(),
                guard.token().0,
                guard.mode() == fl::LockMode::Shared,
                guard.session_id().0,
                guard.lost(),
            ),
            Held::Lead(leadership) => (
                String::new(),
                leadership.token().0,
                false,
                leadership.session_id().0,
                leadership.lost(),
            ),
        };
        Lock {
            inner: Owned::new(LockInner {
                name,
                token,
                shared,
                session_id,
                lost,
                session,
                held: Mutex::new(Some(held)),
            }),
        }
    }
}

#[pymethods]
impl Lock {
    /// The lock's name (empty for an election's leadership).
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.inner.get(py)?.name.clone())
    }

    #[getter]
    fn token(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.inner.get(py)?.token)
    }

    #[getter]
    fn shared(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.inner.get(py)?.shared)
    }

    #[getter]
    fn session_id(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.inner.get(py)?.session_id)
    }

    /// An op of the lost reason, finishing when the holding session is lost.
    fn lost(&self, py: Python<'_>) -> PyResult<Op> {
        let lost = self.inner.get(py)?.lost.clone();
        op_of(async move { Ok(lost.await) }, |py, r| {
            lost_reason(r).into_py_any(py)
        })
    }

    /// Whether the holding session is lost, checked against the lease clock now.
    fn is_lost(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.inner.get(py)?.session.is_lost())
    }

    /// Whether `release` was called.
    fn released(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self
            .inner
            .get(py)?
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none())
    }

    /// Release the lock (resign, for a leadership): an op of None.
    fn release(&self, py: Python<'_>) -> PyResult<Op> {
        let held = self
            .inner
            .get(py)?
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(held) = held else {
            return Err(PyRuntimeError::new_err("the lock was released already"));
        };
        match held {
            Held::Lock(guard) => op_of(guard.release(), none),
            Held::Lead(leadership) => op_of(leadership.resign(), none),
        }
    }
}

/// The native part of the `fencelock` package.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Op>()?;
    module.add_class::<Stream>()?;
    module.add_class::<Client>()?;
    module.add_class::<Session>()?;
    module.add_class::<Lock>()?;
    module.add_function(wrap_pyfunction!(connect, module)?)?;
    Ok(())
}
