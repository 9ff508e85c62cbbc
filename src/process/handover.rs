//! The hand-over of listening sockets to another process of the same binary, both sides of
//! it: the starting side ([`spawn_with_listeners`], [`start_successor`]: the sockets from fd 3
//! on, counted in `FASTSSE_LISTEN_FDS`, with their paths) and the started side
//! ([`inherited_listeners`], and [`relieve_predecessor`] once it accepts). Upgrades and the
//! supervisor's workers both use it.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;

use crate::listen::{inherited, BoundListener, ListenError, SocketFile};

/// How many listening sockets (from fd 3) a process started by an upgrade was handed.
const LISTEN_FDS: &str = "FASTSSE_LISTEN_FDS";
/// The unix socket paths of the handed-over sockets, one line each (empty for TCP): a socket
/// bound at a staged path and renamed cannot tell its real path itself.
const LISTEN_PATHS: &str = "FASTSSE_LISTEN_PATHS";
/// The pid of the process that started this one by an upgrade, told to drain once it accepts.
const UPGRADE_FROM: &str = "FASTSSE_UPGRADE_FROM";
const FIRST_FD: RawFd = 3;

/// In a process started by an upgrade: the listening sockets it was handed. The variable is
/// removed, so that a later upgrade passes its own.
pub fn inherited_listeners() -> Option<Result<Vec<BoundListener>, ListenError>> {
    let n: RawFd = std::env::var(LISTEN_FDS).ok()?.trim().parse().ok()?;
    std::env::remove_var(LISTEN_FDS);
    let paths: Vec<String> = std::env::var(LISTEN_PATHS)
        .unwrap_or_default()
        .split('\n')
        .map(str::to_string)
        .collect();
    std::env::remove_var(LISTEN_PATHS);
    let listeners = (FIRST_FD..FIRST_FD + n.max(0))
        .map(|fd| {
            let named = paths
                .get((fd - FIRST_FD) as usize)
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from);
            let l = inherited(fd).unwrap_or_else(|| {
                Err(ListenError::Io {
                    what: format!("fd {fd} from the upgraded process"),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a listening socket"),
                })
            })?;
            // The socket file is this process's now: removed at exit, as its predecessor would
            // (not a worker's: its supervisor keeps the file).
            Ok(match l {
                BoundListener::Unix { listener, .. } if !super::is_worker() => {
                    let cleanup = named
                        .or_else(|| {
                            let a = listener.local_addr().ok()?;
                            a.as_pathname().map(std::path::Path::to_path_buf)
                        })
                        .and_then(|p| SocketFile::adopt(&p));
                    BoundListener::Unix { listener, cleanup }
                }
                tcp => tcp,
            })
        })
        .collect();
    Some(listeners)
}

/// In a process started by an upgrade, once it accepts: tells its predecessor to drain.
pub fn relieve_predecessor() {
    let Ok(pid) = std::env::var(UPGRADE_FROM) else {
        return;
    };
    std::env::remove_var(UPGRADE_FROM);
    if let Ok(pid) = pid.trim().parse::<i32>() {
        log::info!("upgrade: accepting; telling the old process {pid} to drain");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// The binary to start: argv[0] when it is a path, else the path this process's executable was
/// started from — which, once a package has replaced the file, Linux names `… (deleted)`.
fn binary() -> io::Result<std::path::PathBuf> {
    if let Some(arg0) = std::env::args_os().next() {
        let p = std::path::PathBuf::from(arg0);
        if p.components().count() > 1 {
            return Ok(p);
        }
    }
    std::env::current_exe().map(replaced_by)
}

/// `/usr/bin/fastsse (deleted)` → `/usr/bin/fastsse`: the file now at the path the running
/// binary was started from (started by its bare name through PATH, as `runuser … -- fastsse`).
fn replaced_by(exe: std::path::PathBuf) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = exe.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(path) => std::path::PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        None => exe,
    }
}

/// Listening sockets to hand to another process: their descriptors and unix socket paths.
#[derive(Clone)]
pub struct Handover {
    fds: Vec<RawFd>,
    paths: Vec<String>,
}

impl Handover {
    /// What to hand over of `listeners` (they must stay open while it is used).
    pub fn of(listeners: &[BoundListener]) -> Handover {
        Handover {
            fds: listeners.iter().map(BoundListener::raw_fd).collect(),
            paths: listeners
                .iter()
                .map(|l| {
                    l.socket_path()
                        .map(|p| p.to_string_lossy().replace('\n', ""))
                        .unwrap_or_default()
                })
                .collect(),
        }
    }
    /// How many sockets.
    pub fn len(&self) -> usize {
        self.fds.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

/// Starts the same binary with the same arguments, handing it the sockets as fds 3, 4, …
pub fn start_successor(sockets: &Handover) -> io::Result<std::process::Child> {
    spawn_with_listeners(
        sockets,
        &[(UPGRADE_FROM, std::process::id().to_string())],
        false,
    )
}

/// Starts the same binary with the same arguments and `env`, handing it the sockets as fds
/// 3, 4, … A `worker` gets SIGTERM when its parent dies and starts with no signal blocked.
pub fn spawn_with_listeners(
    sockets: &Handover,
    env: &[(&str, String)],
    worker: bool,
) -> io::Result<std::process::Child> {
    const MAX: usize = 16;
    let fds = &sockets.fds;
    if fds.len() > MAX {
        return Err(io::Error::other(format!(
            "more than {MAX} listening sockets"
        )));
    }
    let mut cmd = std::process::Command::new(binary()?);
    cmd.args(std::env::args_os().skip(1))
        .env(LISTEN_FDS, fds.len().to_string())
        .env(LISTEN_PATHS, sockets.paths.join("\n"));
    if worker {
        // A worker relieves no predecessor: its supervisor does.
        cmd.env_remove(UPGRADE_FROM);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let fds = fds.clone();
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close, prctl, sigprocmask) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if worker {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(io::Error::from)?;
                nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&nix::sys::signal::SigSet::empty()),
                    None,
                )
                .map_err(io::Error::from)?;
            }
            // Move each socket out of the way first, so that placing one at 3 + i never
            // overwrites another still to be placed.
            // (No allocation between fork and exec: a fixed array.)
            let mut high = [0 as RawFd; MAX];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD(1000))
                    .map_err(io::Error::from)?;
            }
            for (i, &h) in high[..fds.len()].iter().enumerate() {
                nix::unistd::dup2(h, FIRST_FD + i as RawFd).map_err(io::Error::from)?;
                nix::unistd::close(h).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::replaced_by;
    use std::path::PathBuf;

    #[test]
    fn a_replaced_binary_is_started_from_its_path() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            replaced_by(p("/usr/bin/fastsse (deleted)")),
            p("/usr/bin/fastsse")
        );
        assert_eq!(replaced_by(p("/usr/bin/fastsse")), p("/usr/bin/fastsse"));
        assert_eq!(
            replaced_by(p("/opt/a (deleted) b")),
            p("/opt/a (deleted) b")
        );
    }
}
