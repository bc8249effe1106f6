//! The admin status page in a real browser: the `fencelock` binary serves a single-node
//! cluster with a held lock and a queue, and headless Chromium (Debian's `chromium`
//! package, which `.ci/run` installs) loads `/`, runs its script, and must show the
//! leader, the held lock and the queue; a screenshot is saved as
//! `$CARGO_TARGET_TMPDIR/status-page.png`.

use fencelock_client::{Client, Wait};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_fencelock");
const HELD: &str = "status-page/held-lock";

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr")
}

/// The HTTP status code of `GET path`, or `None` if the port does not answer.
async fn http_code(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// The server process, killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Chromium. Its absence fails the test: `.ci/run` installs it.
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name;
        }
    }
    panic!(
        "headless Chromium is needed for this test and was not found: \
         `apt-get install -y --no-install-recommends chromium` (.ci/run does this)"
    );
}

/// Runs headless Chromium on `url` with `extra` arguments, killing it after two minutes.
fn run_chromium(profile: &Path, url: &str, extra: &[&str]) -> Output {
    let child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let output = child.wait_with_output().expect("chromium runs");
    let _ = done_tx.send(());
    let _ = watchdog.join();
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_leader_and_held_lock_in_headless_chromium() {
    let browser = chromium();
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_addr, peer, admin) = (free_addr(), free_addr(), free_addr());
    let log = std::fs::File::create(dir.path().join("fencelock.log")).expect("log file");
    let _server = Server(
        Command::new(BIN)
            .args(["serve", "--id", "1"])
            .arg("--listen")
            .arg(client_addr.to_string())
            .arg("--peer-listen")
            .arg(peer.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fencelock"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_code(admin, "/health").await != Some(200) {
        assert!(Instant::now() < deadline, "the node never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = Client::builder(vec![format!("http://{client_addr}")])
        .connect()
        .await
        .expect("connect");
    let holder = client
        .session(Duration::from_secs(30))
        .await
        .expect("session");
    let guard = holder.lock(HELD).await.expect("lock");
    let waiter = client
        .session(Duration::from_secs(30))
        .await
        .expect("session");
    let queued = tokio::spawn(async move {
        let _ = waiter
            .acquire(
                HELD,
                fencelock_client::AcquireOptions::exclusive().wait(Wait::Forever),
            )
            .await;
        waiter
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lock = client.describe(HELD).await.expect("describe").lock;
        if lock.is_some_and(|l| !l.waiters.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the second session never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let url = format!("http://{admin}/");
    let profile = dir.path().join("chromium-profile");
    let dom = tokio::task::spawn_blocking({
        let (profile, url) = (profile.clone(), url.clone());
        move || run_chromium(&profile, &url, &["--dump-dom"])
    })
    .await
    .expect("chromium thread");
    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.status.success(),
        "{browser} --dump-dom failed: {}\n{dom_text}",
        String::from_utf8_lossy(&dom.stderr)
    );
    // The script ran (it marks the body), and rendered the leader, the held lock with
    // its holder's token, and the queue behind it.
    assert!(dom_text.contains("data-rendered=\"js\""), "{dom_text}");
    let cluster_version = dom_text
        .split("<td id=\"cluster-version\">")
        .nth(1)
        .and_then(|rest| rest.split("</td>").next())
        .expect("a cluster version row");
    assert!(
        cluster_version.parse::<u32>().is_ok_and(|v| v >= 1),
        "{cluster_version}"
    );
    assert!(
        dom_text.contains(&format!("<td id=\"leader\">node 1 ({client_addr})</td>")),
        "{dom_text}"
    );
    let held_rows = dom_text
        .split("<tbody id=\"held-locks\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .expect("a held-locks table");
    assert!(held_rows.contains(HELD), "{held_rows}");
    assert!(
        held_rows.contains(&format!("token {}", guard.token())),
        "{held_rows}"
    );
    let queue_rows = dom_text
        .split("<tbody id=\"queues\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .expect("a queues table");
    assert!(
        queue_rows.contains(&format!("<td>{HELD}</td><td>1</td>")),
        "{queue_rows}"
    );
    let events_rows = dom_text
        .split("<tbody id=\"events\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .expect("an events table");
    assert!(events_rows.contains("acquired"), "{events_rows}");
    assert!(
        dom_text.contains("<span id=\"error\"></span>"),
        "{dom_text}"
    );

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = tokio::task::spawn_blocking({
        let screenshot = screenshot.clone();
        move || {
            run_chromium(
                &profile,
                &url,
                &[
                    &format!("--screenshot={}", screenshot.display()),
                    "--window-size=1200,900",
                ],
            )
        }
    })
    .await
    .expect("chromium thread");
    assert!(
        shot.status.success(),
        "{browser} --screenshot failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a near-empty screenshot: {} bytes",
        png.len()
    );
    println!("status page screenshot: {}", screenshot.display());

    drop(guard);
    queued.abort();
}
