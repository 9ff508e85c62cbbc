//! Listening sockets: unix sockets (mode, owner, group; a stale file replaced, a live one refused),
//! TCP, and a listening socket inherited on fd 0 from mod_fcgid, lighttpd, h2o, spawn-fcgi or
//! `cgi-fcgi -start`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike};

use crate::config::{ListenAddr, ServerConfig};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;

/// A unix socket file this process created: removed at shutdown only while the path still
/// names it (a newer process may have replaced it while this one was draining).
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl SocketFile {
    /// Takes over the socket file at `path` as it is now (an upgraded process inheriting its
    /// predecessor's socket), so that it is removed at exit like one bound here.
    pub fn adopt(path: &Path) -> Option<SocketFile> {
        let m = std::fs::symlink_metadata(path).ok()?;
        m.file_type().is_socket().then(|| SocketFile {
            path: path.to_path_buf(),
            identity: (m.dev(), m.ino()),
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still the socket this process created.
    pub fn remove_if_ours(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => {
                let _ = std::fs::remove_file(&self.path);
            }
            Ok(_) => log::info!(
                "{}: now another process's socket; leaving it",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

/// A bound, listening, non-blocking socket, not yet registered with the runtime.
#[derive(Debug)]
pub enum BoundListener {
    /// A unix socket; `cleanup` is removed at shutdown when this process created it.
    Unix {
        listener: std::os::unix::net::UnixListener,
        cleanup: Option<SocketFile>,
    },
    /// A TCP socket.
    Tcp(std::net::TcpListener),
}

impl BoundListener {
    /// A unix socket's path (where it was renamed to, not where it was bound first).
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            BoundListener::Unix {
                cleanup: Some(p), ..
            } => Some(p.path().to_path_buf()),
            BoundListener::Unix { listener, .. } => {
                let a = listener.local_addr().ok()?;
                a.as_pathname().map(Path::to_path_buf)
            }
            BoundListener::Tcp(_) => None,
        }
    }

    /// The listening socket's descriptor (for handing it to an upgraded process).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            BoundListener::Unix { listener, .. } => listener.as_raw_fd(),
            BoundListener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

impl fmt::Display for BoundListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundListener::Unix { listener, cleanup } => match (cleanup, listener.local_addr()) {
                (Some(p), _) => write!(f, "unix:{}", p.path.display()),
                (None, Ok(a)) => match a.as_pathname() {
                    Some(p) => write!(f, "unix:{} (inherited)", p.display()),
                    None => f.write_str("unix socket (inherited)"),
                },
                (None, Err(_)) => f.write_str("unix socket"),
            },
            BoundListener::Tcp(l) => match l.local_addr() {
                Ok(a) => write!(f, "{a}"),
                Err(_) => f.write_str("tcp socket"),
            },
        }
    }
}

/// Why a listener could not be set up.
#[derive(Debug)]
pub enum ListenError {
    /// Another process is accepting on this unix socket.
    InUse(PathBuf),
    /// The path exists and is not a socket.
    NotASocket(PathBuf),
    /// The socket owner or group does not exist.
    UnknownUser(String),
    /// A system call failed.
    Io { what: String, source: io::Error },
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::InUse(p) => write!(
                f,
                "{}: another process is listening on this socket (stop it first)",
                p.display()
            ),
            ListenError::NotASocket(p) => write!(
                f,
                "{}: exists and is not a socket; refusing to replace it",
                p.display()
            ),
            ListenError::UnknownUser(u) => write!(f, "socket owner/group `{u}` does not exist"),
            ListenError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for ListenError {}

fn io_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> ListenError {
    let what = what.into();
    move |e| ListenError::Io {
        what,
        source: io::Error::from(e),
    }
}

fn std_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ListenError {
    let what = what.into();
    move |source| ListenError::Io { what, source }
}

/// Binds and listens on `addr` with the socket settings from `server`.
pub fn bind(addr: &ListenAddr, server: &ServerConfig) -> Result<BoundListener, ListenError> {
    match addr {
        ListenAddr::Unix(path) => bind_unix(path, server),
        ListenAddr::Tcp(a) => bind_tcp(a),
    }
}

fn bind_tcp(addr: &str) -> Result<BoundListener, ListenError> {
    let sa: std::net::SocketAddr = addr.parse().map_err(|_| ListenError::Io {
        what: format!("listen {addr}"),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not an address"),
    })?;
    let family = if sa.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(io_err(format!("socket for {addr}")))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .map_err(io_err(format!("SO_REUSEADDR on {addr}")))?;
    let sockaddr = socket::SockaddrStorage::from(sa);
    socket::bind(fd.as_raw_fd(), &sockaddr).map_err(io_err(format!("bind {addr}")))?;
    socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))
        .map_err(io_err(format!("listen {addr}")))?;
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)
        .map_err(std_err(format!("O_NONBLOCK on {addr}")))?;
    Ok(BoundListener::Tcp(l))
}

/// Removes `path` if it is a socket nobody accepts on; refuses a live socket or another file.
fn clear_stale_socket(path: &Path) -> Result<(), ListenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(std_err(format!("stat {}", path.display()))(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ListenError::InUse(path.to_path_buf())),
        Err(e)
            if e.kind() == io::ErrorKind::ConnectionRefused
                || e.kind() == io::ErrorKind::NotFound =>
        {
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
                .map_err(std_err(format!("remove stale socket {}", path.display())))
        }
        Err(e) => Err(std_err(format!("probe {}", path.display()))(e)),
    }
}

/// Binds the socket in a private directory (mode 0700) beside `path`, applies mode and owner
/// there, and only then renames it into place: nobody can connect before its mode applies,
/// whatever the umask.
fn bind_unix(path: &Path, server: &ServerConfig) -> Result<BoundListener, ListenError> {
    clear_stale_socket(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // An unguessable name: in a shared directory another user cannot take it first.
    let private = (0..8)
        .find_map(|_| {
            let p = parent.join(format!(".fs{:08x}", random_u32()));
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&p)
                .ok()
                .map(|()| p)
        })
        .ok_or_else(|| ListenError::Io {
            what: format!("create a private directory in {}", parent.display()),
            source: io::Error::last_os_error(),
        })?;
    let staged = private.join("s");
    let result = bind_staged(&staged, path, server);
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result
}

/// 32 random bits.
fn random_u32() -> u32 {
    crate::random::u64() as u32
}

fn bind_staged(
    staged: &Path,
    path: &Path,
    server: &ServerConfig,
) -> Result<BoundListener, ListenError> {
    let shown = path.display().to_string();
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_err(format!("socket for {shown}")))?;
    let addr = socket::UnixAddr::new(staged).map_err(io_err(format!("socket path {shown}")))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(io_err(format!("bind {shown}")))?;
    if let Some(mode) = server.socket_mode {
        std::fs::set_permissions(staged, std::fs::Permissions::from_mode(mode))
            .map_err(std_err(format!("chmod {mode:o} {shown}")))?;
    }
    if server.socket_owner.is_some() || server.socket_group.is_some() {
        let uid = match &server.socket_owner {
            Some(name) => Some(
                nix::unistd::User::from_name(name)
                    .map_err(io_err(format!("look up user {name}")))?
                    .ok_or_else(|| ListenError::UnknownUser(name.clone()))?
                    .uid,
            ),
            None => None,
        };
        let gid = match &server.socket_group {
            Some(name) => Some(
                nix::unistd::Group::from_name(name)
                    .map_err(io_err(format!("look up group {name}")))?
                    .ok_or_else(|| ListenError::UnknownUser(name.clone()))?
                    .gid,
            ),
            None => None,
        };
        nix::unistd::chown(staged, uid, gid).map_err(io_err(format!("chown {shown}")))?;
    }
    socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))
        .map_err(io_err(format!("listen {shown}")))?;
    let meta = std::fs::symlink_metadata(staged).map_err(std_err(format!("stat {shown}")))?;
    std::fs::rename(staged, path).map_err(std_err(format!("move the socket to {shown}")))?;
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(std_err(format!("O_NONBLOCK on {shown}")))?;
    Ok(BoundListener::Unix {
        listener,
        cleanup: Some(SocketFile {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        }),
    })
}

/// Whether `fd` is a listening socket (SO_ACCEPTCONN), as web servers hand FastCGI apps on fd 0.
/// A connected socket (mod_cgid's stdin) or a pipe is not.
pub fn is_listening_socket(fd: BorrowedFd<'_>) -> bool {
    socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false)
}

/// Takes over the listening socket on `fd` (0 when spawned by a web server): finds its family,
/// sets O_NONBLOCK and FD_CLOEXEC. `None` if `fd` is not a listening socket.
pub fn inherited(fd: RawFd) -> Option<Result<BoundListener, ListenError>> {
    // SAFETY: fd is checked to be a listening socket before ownership is taken; the process
    // never uses this descriptor elsewhere (fd 0 of a spawned FastCGI app is only the socket).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if !is_listening_socket(borrowed) {
        return None;
    }
    Some(take_inherited(fd))
}

fn take_inherited(fd: RawFd) -> Result<BoundListener, ListenError> {
    let family = socket::getsockname::<socket::SockaddrStorage>(fd)
        .map_err(io_err(format!("getsockname on fd {fd}")))?
        .family();
    // SAFETY: see `inherited`.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let flags = nix::fcntl::fcntl(owned.as_fd().as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD)
        .map_err(io_err("F_GETFD"))?;
    let flags = nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
    nix::fcntl::fcntl(owned.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(flags))
        .map_err(io_err("FD_CLOEXEC"))?;
    let l = match family {
        Some(AddressFamily::Unix) => {
            let l = std::os::unix::net::UnixListener::from(owned);
            l.set_nonblocking(true)
                .map_err(std_err("O_NONBLOCK on inherited socket"))?;
            BoundListener::Unix {
                listener: l,
                cleanup: None,
            }
        }
        _ => {
            let l = std::net::TcpListener::from(owned);
            l.set_nonblocking(true)
                .map_err(std_err("O_NONBLOCK on inherited socket"))?;
            BoundListener::Tcp(l)
        }
    };
    Ok(l)
}

/// Listening sockets handed over by systemd socket activation: `LISTEN_PID` names this process
/// and `LISTEN_FDS` counts them, from fd 3 on (`sd_listen_fds(3)`). The variables are removed so
/// that no child takes them for its own. `None` when not socket-activated. The socket file
/// belongs to systemd: it is never removed here, so it outlives restarts (connections queue in
/// its backlog meanwhile).
pub fn systemd_activated() -> Option<Result<Vec<BoundListener>, ListenError>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let n: RawFd = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    let listeners = (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n.max(0))
        .map(|fd| {
            inherited(fd).unwrap_or_else(|| {
                Err(ListenError::Io {
                    what: format!("fd {fd} from systemd (LISTEN_FDS)"),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a listening socket"),
                })
            })
        })
        .collect();
    Some(listeners)
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if closed), so no socket opened later takes
/// their number and receives log output. Spawned FastCGI apps often start with them closed.
pub fn ensure_std_fds() {
    for fd in 0..=2 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            // The lowest free descriptor is `fd` itself.
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let raw = f.as_raw_fd();
                if raw == fd {
                    std::mem::forget(f);
                } else {
                    let _ = nix::unistd::dup2(raw, fd);
                }
            }
        }
    }
}

/// h2o's lifeline: when spawned by `fastcgi.spawn`, fd 5 is the read end of a pipe whose EOF
/// means "the server is gone, exit". Returns it if fd 5 is a pipe.
pub fn lifeline_fd() -> Option<OwnedFd> {
    const LIFELINE: RawFd = 5;
    let stat = nix::sys::stat::fstat(LIFELINE).ok()?;
    if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFIFO {
        return None;
    }
    // SAFETY: fd 5 is an open FIFO inherited from the spawning server and used nowhere else.
    Some(unsafe { OwnedFd::from_raw_fd(LIFELINE) })
}
