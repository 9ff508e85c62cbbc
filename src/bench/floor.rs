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
    let head = stdout_record(
        b"Status: 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n",
    );
    if conn.try_write(&head).is_ok() {
        conns.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }
}

/// Runs the floor upstream until killed.
pub fn run(args: FloorArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
        {
            let conns = conns.clone();
            let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
            tokio::spawn(async move {
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
        if let Some(path) = args.listen.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let l =
                tokio::net::UnixListener::bind(path).map_err(|e| format!("bind {path}: {e}"))?;
            loop {
                if let Ok((s, _)) = l.accept().await {
                    tokio::spawn(admit(conns.clone(), Conn::Unix(s)));
                }
            }
        } else {
            let l = tokio::net::TcpListener::bind(&args.listen)
                .await
                .map_err(|e| format!("bind {}: {e}", args.listen))?;
            loop {
                if let Ok((s, _)) = l.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(admit(conns.clone(), Conn::Tcp(s)));
                }
            }
        }
    })
}
