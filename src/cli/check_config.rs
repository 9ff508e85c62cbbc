//! `fastsse check-config`: what `serve` would refuse, refused before it listens — the
//! settings, and each topics route's journal (that this user can create or write it, and its
//! damage under `on_corruption`) — and the routes listed.

use std::path::PathBuf;

use crate::config::Config;

/// `fastsse check-config`: refuses what `serve` would refuse before it listens.
pub(super) fn check_config(
    file: &std::path::Path,
    data_dir: Option<PathBuf>,
) -> Result<(), String> {
    let mut config = Config::load(file, crate::routes::kinds()).map_err(|e| e.to_string())?;
    if let Some(dir) = data_dir {
        config.journal.dir = dir;
    }
    for r in &config.routes {
        let path = r.path.get_ref();
        let what = r.settings.describe();
        if !r.has_journal() {
            println!("{path} -> {what}");
            continue;
        }
        #[cfg(feature = "redis")]
        if let crate::hub::Storage::Redis(rs) = config.journal.storage_for(r) {
            match crate::hub::redis::check(&rs) {
                Ok(n) => println!("{path} -> {what}, redis {} ({n} entries)", rs.key),
                // Not fatal: the daemon starts and catches up once Redis answers.
                Err(e) => println!(
                    "{path} -> {what}, redis {}: not answering now ({e}); the daemon starts anyway and catches up",
                    rs.key
                ),
            }
            continue;
        }
        let settings = config.journal.settings_for(r);
        let damaged = check_journal(&settings).map_err(|e| format!("route {path}: {e}"))?;
        println!(
            "{path} -> {what}, journal {}{}",
            settings.dir.display(),
            if damaged > 0 {
                format!(" ({damaged} damaged regions, skipped per on_corruption)")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Whether a journal can be opened by this user without writing anything: its directory (or
/// the nearest existing parent, where it would be created) is writable, and its records read
/// back under the configured corruption policy. Returns the damaged regions skipped.
fn check_journal(settings: &crate::hub::journal::JournalSettings) -> Result<usize, String> {
    use nix::unistd::{access, AccessFlags};
    let dir = &settings.dir;
    let mut existing = dir.as_path();
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
    }
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
    if access(existing, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        return Err(format!(
            "user {user} cannot write {} (to {} the journal {})",
            existing.display(),
            if existing == dir { "use" } else { "create" },
            dir.display()
        ));
    }
    if !dir.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if access(&path, AccessFlags::W_OK).is_err() {
            return Err(format!(
                "user {user} cannot write {}; the daemon could not append to this journal",
                path.display()
            ));
        }
    }
    crate::hub::journal::read_all(dir, settings.on_corruption, |_| {})
        .map(|damage| damage.len())
        .map_err(|e| e.to_string())
}
