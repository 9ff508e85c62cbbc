//! `fastsse publish`: where a publication from the command line goes. Through the running
//! daemon's socket when there is one (the daemon writes its own journal, as its own user), else
//! straight into the journal — but never into a data directory the command would have to invent
//! (run from the wrong folder, it used to create one the daemon never reads), and never leaving
//! files the journal's owner cannot write (run as root, it used to leave root-owned segments
//! that made every later publish of the daemon fail).

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::config::{Config, ListenAddr, RouteConfig};
use crate::fcgi::codec::{encode_record, Record, RecordCodec};
use crate::fcgi::params::encode_pair;
use crate::fcgi::{FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT};
use crate::hub::journal::{JournalWriter, Publication};

/// The config `fastsse publish` reads when none is named: the daemon's, where the systemd unit
/// keeps it.
pub const SYSTEM_CONFIG: &str = "/etc/fastsse/fastsse.toml";

/// The first unix socket in `listen` that accepts a connection now.
pub fn live_socket(config: &Config) -> Option<PathBuf> {
    config.server.listen.iter().find_map(|a| match a {
        ListenAddr::Unix(p) if std::os::unix::net::UnixStream::connect(p).is_ok() => {
            Some(p.clone())
        }
        _ => None,
    })
}

fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// POSTs `p` to `route` over FastCGI on `socket`, as a web server would; returns the id.
pub fn via_socket(socket: &Path, route: &RouteConfig, p: &Publication) -> Result<u64, String> {
    let mut body = String::new();
    for t in &p.topics {
        body.push_str(&format!("topic={}&", form_escape(t)));
    }
    if let Some(e) = &p.event {
        body.push_str(&format!("type={}&", form_escape(e)));
    }
    if let Some(r) = p.retry_ms {
        body.push_str(&format!("retry={r}&"));
    }
    body.push_str(&format!("data={}", form_escape(&p.data)));
    let len = body.len().to_string();
    let mut params = BytesMut::new();
    for (k, v) in [
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", route.path.get_ref().as_str()),
        ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ("CONTENT_LENGTH", len.as_str()),
        ("REMOTE_ADDR", "fastsse-publish"),
    ] {
        encode_pair(&mut params, k.as_bytes(), v.as_bytes());
    }
    let mut out = BytesMut::new();
    let records = [
        Record::new(FCGI_BEGIN_REQUEST, 1, vec![0, 1, 0, 0, 0, 0, 0, 0]),
        Record::new(FCGI_PARAMS, 1, params.freeze()),
        Record::new(FCGI_PARAMS, 1, Vec::new()),
        Record::new(FCGI_STDIN, 1, body.into_bytes()),
        Record::new(FCGI_STDIN, 1, Vec::new()),
    ];
    for r in &records {
        encode_record(r, &mut out).map_err(|e| e.to_string())?;
    }
    let shown = socket.display();
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connect {shown}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(&out)
        .map_err(|e| format!("write to {shown}: {e}"))?;
    let mut buf = BytesMut::new();
    let mut stdout = Vec::new();
    loop {
        while let Some(r) = RecordCodec.decode(&mut buf).map_err(|e| e.to_string())? {
            match r.record_type {
                FCGI_STDOUT => stdout.extend_from_slice(&r.content),
                FCGI_END_REQUEST => return answer(&stdout),
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("read from {shown}: {e}"))?;
        if n == 0 {
            return Err(format!("{shown} closed the connection before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The id from a publish response, or its reason.
fn answer(stdout: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(stdout);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.starts_with("Status: 200") {
        return body
            .trim()
            .parse()
            .map_err(|_| format!("the daemon answered 200 without an id: {body:?}"));
    }
    let status = head
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("Status: ");
    Err(format!("{status}: {}", body.trim()))
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// Appends `p` to the route's journal directly (no daemon listening). `explicit_dir` says the
/// data directory was named on the command line, so it may be created.
pub fn into_journal(
    config: &Config,
    route: &RouteConfig,
    p: Publication,
    explicit_dir: bool,
) -> Result<u64, String> {
    #[cfg(feature = "redis")]
    if let crate::hub::Storage::Redis(rs) = config.journal.storage_for(route) {
        return crate::hub::redis::append_once(&rs, p);
    }
    let settings = config.journal.settings_for(route);
    let data_dir = &config.journal.dir;
    if !explicit_dir && !data_dir.is_dir() {
        return Err(format!(
            "no data directory {} here (the daemon's is where it runs: /var/lib/fastsse for the \
             systemd unit); pass --data-dir DIR, or --config with the daemon's config while it runs",
            std::fs::canonicalize(".")
                .unwrap_or_default()
                .join(data_dir)
                .display()
        ));
    }
    // Files this process creates belong to its user: as root in a journal owned by someone
    // else, they would lock the owner out of its own journal.
    let owned_by = [&settings.dir, data_dir]
        .into_iter()
        .find_map(|d| std::fs::metadata(d).ok().map(|m| m.uid()));
    let me = nix::unistd::geteuid().as_raw();
    if let Some(owner) = owned_by {
        if owner != me {
            let shown = if settings.dir.exists() {
                &settings.dir
            } else {
                data_dir
            };
            return Err(format!(
                "{} belongs to {}, and files written by {} would be unusable to it: run as its \
                 owner (sudo -u {} fastsse publish ...)",
                shown.display(),
                user_name(owner),
                user_name(me),
                user_name(owner)
            ));
        }
    }
    let mut writer = JournalWriter::open(settings).map_err(|e| e.to_string())?;
    match writer.append(&[p]).pop() {
        Some(Ok(id)) => Ok(id),
        Some(Err(e)) => Err(format!("not stored: {e}")),
        None => Err("not stored".into()),
    }
}
