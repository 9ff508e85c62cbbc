//! `fastsse publish`: one event, through the running daemon's socket or straight into the
//! journal.

use std::path::PathBuf;

use super::serve::load_config;
use super::PublishArgs;

pub(super) fn publish(args: PublishArgs) -> Result<(), String> {
    use crate::hub::journal::Publication;
    use crate::publish::{check_event_name, validate_topics};
    use crate::publish_client::{into_journal, live_socket, via_socket, SYSTEM_CONFIG};
    let system = PathBuf::from(SYSTEM_CONFIG);
    let config_path = args
        .config
        .or_else(|| std::env::var_os("FASTSSE_CONFIG").map(PathBuf::from))
        .or_else(|| system.is_file().then_some(system));
    let mut config = load_config(config_path)?;
    let explicit_dir = args.data_dir.is_some();
    if let Some(dir) = args.data_dir {
        config.journal.dir = dir;
    }
    let route = config
        .routes
        .iter()
        .filter(|r| r.kind.name() == "topics")
        .find(|r| args.route.as_deref().is_none_or(|p| r.path.get_ref() == p))
        .ok_or_else(|| match &args.route {
            Some(p) => format!("no topics route {p} in the config"),
            None => "the config has no topics route".to_string(),
        })?;
    let max_topics = route.settings.max_topics().unwrap_or(usize::MAX);
    validate_topics(&args.topic, max_topics).map_err(|e| e.to_string())?;
    check_event_name(args.event.as_deref()).map_err(|e| e.to_string())?;
    let data = if args.data == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("reading standard input: {e}"))?;
        s
    } else {
        args.data
    };
    let publication = Publication {
        topics: args.topic,
        event: args.event,
        retry_ms: args.retry,
        data,
        ..Default::default()
    };
    let socket = args
        .socket
        .or_else(|| (!explicit_dir).then(|| live_socket(&config)).flatten());
    let id = match socket {
        Some(s) => via_socket(&s, route, &publication)?,
        None => into_journal(&config, route, publication, explicit_dir)?,
    };
    println!("{id}");
    Ok(())
}
