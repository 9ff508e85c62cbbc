//! `fastsse bench floor`: the least possible FastCGI SSE upstream, for comparisons only. It skips
//! the request, sends the header block, then on every tick writes one pre-encoded STDOUT record
//! (`{"t":<µs>,"seq":<n>}`) to every connection, and nothing else: no routing, no hub, no
//! heartbeats, no shutdown handling. Whatever a real backend costs beyond it is its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use crate::fcgi::codec::{encode_record, Record};
use crate::fcgi::FCGI_STDOUT;
use crate::source::clock::unix_now;

/// Options of `fastsse bench floor`.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Where to listen: unix:PATH or HOST:PORT.
    #[arg(long)]
    pub listen: String,
    /// Events per second written to every connection.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Processes sharing the listening socket, each with its own connections and ticks (one
    /// process may open only `ulimit -n` files; compare with fastsse's `[server] processes`). A
    /// process near its limit stops accepting, so the others take the rest.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Write nothing for this long after starting (let a bench ramp up first, as it does
    /// before publishing to a real server).
    #[arg(long, default_value = "0s", value_parser = |s: &str| crate::config::parse_duration(s))]
    pub delay: Duration,
}

/// Connections one process may hold: its open-file limit, less room for its own files.
fn room() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft as usize)
        .saturating_sub(64)
}

/// The listening socket, bound before any process or runtime starts.
enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

fn bind(listen: &str) -> Result<Listener, String> {
    let l = match listen.strip_prefix("unix:") {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            Listener::Unix(
                std::os::unix::net::UnixListener::bind(path)
                    .map_err(|e| format!("bind {path}: {e}"))?,
            )
        }
        None => Listener::Tcp(
            std::net::TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?,
        ),
    };
    match &l {
        Listener::Unix(u) => u.set_nonblocking(true),
        Listener::Tcp(t) => t.set_nonblocking(true),
    }
    .map_err(|e| e.to_string())?;
    Ok(l)
}

/// Forks `n - 1` children (before any thread exists); each process serves on its own and
/// ends with the first one (SIGTERM on its death). Returns in every process.
fn fork_processes(n: usize) -> Result<(), String> {
    let first = nix::unistd::getpid();
    for _ in 1..n {
        // SAFETY: no thread or runtime exists yet (called before the runtime is built), so the
        // child is a plain copy of this single-threaded process.
        match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
            nix::unistd::ForkResult::Child => {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(|e| format!("prctl: {e}"))?;
                // The first process died before the signal was set: end now, not never.
                if nix::unistd::getppid() != first {
                    std::process::exit(0);
                }
                return Ok(());
            }
            nix::unistd::ForkResult::Parent { .. } => {}
        }
    }
    Ok(())
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Conn {
    fn try_write(&self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.try_write(b),
            Conn::Tcp(s) => s.try_write(b),
        }
    }
}

fn stdout_record(text: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let _ = encode_record(&Record::new(FCGI_STDOUT, 1, text.to_vec()), &mut out);
    out
}

async fn admit(conns: Arc<Mutex<Vec<Conn>>>, conn: Conn) {
    let mut buf = vec![0u8; 65536];
    // Skip the request: whatever the web server sent first (BEGIN, PARAMS, STDIN).
    let n = match &conn {
        Conn::Unix(s) => {
            s.readable().await.ok();
            s.try_read(&mut buf).unwrap_or(0)
        }
        Conn::Tcp(s) => {
            s.readable().await.ok();
            s.try_read(&mut buf).unwrap_or(0)
        }
    };
    if n == 0 {
        return;
    }
    // The head and a retry hint at once, as fastsse sends them: nginx holds a head without a
    // body back (postpone_output), and a client waiting for it would time out.
    let head = stdout_record(
        b"Status: 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\nretry: 3000\n\n",
    );
    if conn.try_write(&head).is_ok() {
        conns.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }
}

/// Runs the floor upstream (in `--processes` processes) until killed.
pub fn run(args: FloorArgs) -> Result<(), String> {
    let listener = bind(&args.listen)?;
    fork_processes(args.processes.max(1))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
        {
            let conns = conns.clone();
            let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
            let delay = args.delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut tick = tokio::time::interval(period);
                let mut seq = 0u64;
                loop {
                    tick.tick().await;
                    seq += 1;
                    let data = format!(
                        "id: {seq}\ndata: {{\"t\":{},\"seq\":{seq}}}\n\n",
                        unix_now().as_micros()
                    );
                    let rec = stdout_record(data.as_bytes());
                    let mut all = conns.lock().unwrap_or_else(|p| p.into_inner());
                    // One write per connection; a connection that cannot take it whole is dropped.
                    all.retain(|c| matches!(c.try_write(&rec), Ok(n) if n == rec.len()));
                }
            });
        }
        let room = room();
        let full = || conns.lock().unwrap_or_else(|p| p.into_inner()).len() >= room;
        match listener {
            Listener::Unix(l) => {
                let l = tokio::net::UnixListener::from_std(l).map_err(|e| e.to_string())?;
                loop {
                    if full() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        match l.accept().await {
                            Ok((s, _)) => drop(tokio::spawn(admit(conns.clone(), Conn::Unix(s)))),
                            // EMFILE and friends: do not spin.
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            Listener::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                loop {
                    if full() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        match l.accept().await {
                            Ok((s, _)) => {
                                let _ = s.set_nodelay(true);
                                tokio::spawn(admit(conns.clone(), Conn::Tcp(s)));
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
        }
    })
}
