//! The program guard: a small process between fastsse and every program it runs, so that all a
//! program started — a script's `sleep 3600 &` included — ends with it: when its browser
//! leaves, when it exits by itself, and when fastsse is killed outright (`kill -9`), which no
//! signal handler in fastsse could see.
//!
//! fastsse starts `/proc/self/exe __program-guard FASTSSE_PID GRACE_MS PROGRAM ARGS…` as the
//! leader of a process group of its own. The guard asks for SIGTERM when its parent dies
//! (`PR_SET_PDEATHSIG`, set by the guard itself: an exec of a binary with file capabilities
//! would clear one set before it), checks that its parent is still `FASTSSE_PID`, runs the
//! program in its group, reaps whatever is reparented to it (`PR_SET_CHILD_SUBREAPER`), and:
//! - on SIGTERM (fastsse ending the program, or fastsse gone): SIGTERM to the whole group, then
//!   SIGKILL to it (itself included) after `GRACE_MS`;
//! - when the program exits: SIGKILL to whatever else is left in the group, then it exits with
//!   the program's status (128 + N for a signal, as shells do).
//!
//! A program that leaves the group on purpose (`setsid`, a double-forking daemon) escapes it;
//! under systemd, the unit's cgroup catches those (`KillMode=control-group`).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::{kill, killpg, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execvp, fork, getpgrp, getpid, getppid, ForkResult, Pid};

/// The first argument that makes `fastsse` run as a guard.
pub const ARG: &str = "__program-guard";

/// Runs the guard with `args` (`FASTSSE_PID GRACE_MS PROGRAM ARGS…`); returns the exit status.
pub fn run(args: &[OsString]) -> i32 {
    let number = |i: usize| args.get(i).and_then(|a| a.to_str()?.parse::<u64>().ok());
    let (Some(parent), Some(grace_ms)) = (number(0), number(1)) else {
        return usage();
    };
    let Ok(argv) = args[2..]
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<CString>, _>>()
    else {
        return usage();
    };
    if argv.is_empty() {
        return usage();
    }
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGALRM,
    ] {
        signals.add(s);
    }
    let mut old = SigSet::empty();
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), Some(&mut old)).is_err() {
        return 126;
    }
    let _ = nix::sys::prctl::set_child_subreaper(true);
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err() {
        return 126;
    }
    // fastsse died before the guard asked for SIGTERM on its death: nobody wants this program.
    if getppid().as_raw() as u64 != parent {
        return 1;
    }
    // SAFETY: the guard is single-threaded (it is a fresh exec of fastsse that started no
    // runtime); the child only restores its signal mask and execs.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            let _ = execvp(&argv[0], &argv);
            eprintln!(
                "cannot run {:?}: {}",
                argv[0],
                std::io::Error::last_os_error()
            );
            // SAFETY: leaving the forked child without running the parent's exit handlers.
            unsafe { nix::libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            release_stdout();
            watch(child, grace_ms, &signals)
        }
        Err(_) => 126,
    }
}

fn usage() -> i32 {
    eprintln!(
        "usage: fastsse {ARG} FASTSSE_PID GRACE_MS PROGRAM [ARGS...] (started by fastsse itself)"
    );
    2
}

/// The program's stdout is the guard's too: let go of it, so that fastsse sees the end of the
/// output when the program's group is gone, not when the guard is.
fn release_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// Waits for signals until the program is gone; returns its status.
fn watch(child: Pid, grace_ms: u64, signals: &SigSet) -> i32 {
    let group = getpgrp();
    let mut ending = false;
    loop {
        let Ok(signal) = signals.wait() else {
            continue;
        };
        match signal {
            Signal::SIGCHLD => {
                if let Some(status) = reap(child) {
                    kill_rest_of_group(group);
                    return status;
                }
            }
            Signal::SIGALRM => {
                // The grace is over: everything in the group, the guard included.
                let _ = killpg(group, Signal::SIGKILL);
            }
            _ if !ending => {
                ending = true;
                let _ = killpg(group, Signal::SIGTERM);
                let secs = grace_ms.div_ceil(1000).clamp(1, u64::from(u32::MAX)) as u32;
                nix::unistd::alarm::set(secs);
            }
            // Our own SIGTERM to the group, come back to us.
            _ => {}
        }
    }
}

/// Reaps every child that ended (reparented orphans too); the program's status once it ended.
fn reap(child: Pid) -> Option<i32> {
    let mut status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => status = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                status = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return status,
            Ok(_) => {}
        }
    }
}

/// SIGKILL to every process left in `group` but the guard (what the program left behind),
/// again until none is found (one may fork while the list is read), a few rounds at most.
fn kill_rest_of_group(group: Pid) {
    for _ in 0..10 {
        if kill_group_members(group) == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// One round of [`kill_rest_of_group`]; how many were signalled.
fn kill_group_members(group: Pid) -> usize {
    let me = getpid();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut signalled = 0;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces): state, ppid, pgrp, …
        let pgrp = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(2)?.parse::<i32>().ok());
        // A zombie (state Z) is gone already: the guard reaps its own below.
        let zombie = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            == Some("Z");
        if pgrp == Some(group.as_raw()) && pid != me.as_raw() && !zombie {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            signalled += 1;
        }
    }
    // Those that were reparented to the guard.
    while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
        waitpid(None, Some(WaitPidFlag::WNOHANG))
    {}
    signalled
}
