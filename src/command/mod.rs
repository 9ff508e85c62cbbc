//! `type = "command"` routes: a program's stdout as events. `shared`: one process for every
//! subscriber of the route ([`shared`]), started with the first (or at start), stopped
//! `idle_stop` after the last, restarted with backoff when it exits. `per-stream`: one process
//! per browser with a CGI-style environment ([`per_stream`]), ended (SIGTERM, then SIGKILL after
//! `kill_grace`) the moment its browser leaves. The program is an argv list, never a shell; it
//! gets PATH and the `env` allow-list only, runs in `working_dir`, and as `user` when fastsse
//! runs as root. Its stderr is logged line by line with the route.

pub mod guard;
pub mod output;
pub mod per_stream;
pub mod shared;
pub mod slots;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// `mode` of a command route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One process, every subscriber gets every event.
    #[default]
    Shared,
    /// One process per stream.
    PerStream,
}

/// `start` of a shared command route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// With the first subscriber.
    #[default]
    OnDemand,
    /// When fastsse starts, and kept running.
    Always,
}

/// Where `program` is: itself when it names a path, else the first match on PATH.
fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
        .to_str()
        .unwrap_or("")
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Whether the program `argv` names can run as configured: found on PATH (or a path) and
/// executable, its `working_dir` a directory, its `user` one that exists.
pub fn check(
    argv: &[String],
    working_dir: Option<&std::path::Path>,
    user: Option<&str>,
) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("command = [\"program\", \"arg\", ...] is required".into());
    };
    let path = resolve(program).ok_or_else(|| format!("{program}: not found on PATH"))?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{}: not an executable file", path.display()));
    }
    if let Some(dir) = working_dir {
        if !dir.is_dir() {
            return Err(format!("working_dir {}: no such directory", dir.display()));
        }
    }
    if let Some(user) = user {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .ok_or_else(|| format!("user {user}: no such user"))?;
    }
    Ok(())
}

/// The process settings of a command route.
#[derive(Clone, Debug)]
pub struct Program {
    /// Route path, for logs.
    pub route: String,
    /// argv.
    pub argv: Vec<String>,
    /// Working directory.
    pub dir: Option<PathBuf>,
    /// Environment passed through (names), besides PATH.
    pub env: Vec<String>,
    /// (uid, gid) to run as, when fastsse runs as root.
    pub ids: Option<(u32, u32)>,
    /// SIGTERM → SIGKILL grace.
    pub kill_grace: Duration,
}

impl Program {
    /// The program of route `route`: `argv` run in `dir`, passing the variables named in `env`
    /// through, as `user` when this process is root (looked up: config time only), given
    /// `kill_grace` to end.
    pub fn new(
        route: &str,
        argv: &[String],
        (dir, env): (Option<&std::path::Path>, &[String]),
        user: Option<&str>,
        kill_grace: std::time::Duration,
    ) -> Program {
        let ids = user
            .filter(|_| nix::unistd::geteuid().is_root())
            .and_then(|u| nix::unistd::User::from_name(u).ok().flatten())
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
        Program {
            route: route.to_string(),
            argv: argv.to_vec(),
            dir: dir.map(std::path::Path::to_path_buf),
            env: env.to_vec(),
            ids,
            kill_grace,
        }
    }

    /// Starts the program with `extra` environment variables; stdout piped, stderr logged. It
    /// runs under a [`guard`] that leads its process group: the child returned is the guard,
    /// whose pid is the group's id.
    pub fn spawn(&self, extra: &[(String, String)]) -> std::io::Result<tokio::process::Child> {
        // The running binary, even if the file was replaced since (an upgrade).
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        cmd.arg(guard::ARG)
            .arg(std::process::id().to_string())
            .arg(self.kill_grace.as_millis().to_string())
            .args(&self.argv)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group (the guard leads it): a signal to fastsse's group does not
            // reach it twice, and ending the program ends all it started.
            .process_group(0);
        for name in &self.env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        // Ends with fastsse even when fastsse is killed outright (no orphaned loops): the
        // guard gets SIGTERM and ends the program's group. Set in the child after its uid
        // changed (a change of credentials clears it). Programs are started from runtime
        // worker threads, which live as long as the runtime.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn()?;
        if let Some(err) = child.stderr.take() {
            tokio::spawn(log_lines(self.route.clone(), child.id(), err));
        }
        Ok(child)
    }
}

/// Logs a program's stderr line by line (a line longer than 4 KiB is cut), with the route
/// and pid.
async fn log_lines(route: String, pid: Option<u32>, mut err: impl AsyncRead + Unpin) {
    const MAX: usize = 4096;
    let pid = pid.unwrap_or(0);
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    let mut cut = false;
    let flush = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        log::warn!("route {route}: program {pid} says: {}", text.trim_end());
        line.clear();
    };
    loop {
        let n = match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                if !std::mem::take(&mut cut) {
                    flush(&mut line);
                }
            } else if !cut {
                line.push(b);
                if line.len() >= MAX {
                    flush(&mut line);
                    cut = true;
                }
            }
        }
    }
    if !line.is_empty() {
        flush(&mut line);
    }
}

/// Ends a program and all it started: SIGTERM to its guard, which passes it to the group and
/// sends SIGKILL after `grace`; should the guard itself not be gone a second after that, the
/// whole group gets SIGKILL from here. Then reaps it. In the background (a browser leaving does
/// not wait for it).
pub fn end(mut child: tokio::process::Child, grace: Duration) {
    use nix::sys::signal::{kill, killpg, Signal};
    let Some(pid) = child.id() else { return };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        let _ = killpg(pid, Signal::SIGKILL);
        return;
    };
    rt.spawn(async move {
        let limit = grace + Duration::from_secs(1);
        if tokio::time::timeout(limit, child.wait()).await.is_err() {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    });
}
