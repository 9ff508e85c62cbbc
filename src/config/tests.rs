//! Unit tests of the config: parsing, defaults, and refusals that name file, line and key.

use super::*;

/// Parses with every route kind fastsse has.
fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    Config::parse(text, file, crate::routes::kinds())
}

/// The path and type of each route.
fn routes_of(c: &Config) -> Vec<(String, &'static str)> {
    c.routes
        .iter()
        .map(|r| (r.path.get_ref().clone(), r.kind.name()))
        .collect()
}

#[test]
fn empty_config_is_the_default() {
    let c = parse("", "t.toml").unwrap();
    assert_eq!(
        routes_of(&c),
        routes_of(&Config::embedded(crate::routes::kinds()))
    );
    assert_eq!(
        routes_of(&c),
        [
            ("/clock".to_string(), "clock"),
            ("/ping".into(), "ping"),
            ("/status".into(), "status"),
            ("/events".into(), "topics")
        ]
    );
    assert_eq!(c.stream.heartbeat, Duration::from_secs(15));
    assert_eq!(c.server.max_streams, 10_000);
}

#[test]
fn shipped_config_parses() {
    let text = include_str!("../../conf/fastsse.toml");
    let c = parse(text, "conf/fastsse.toml").unwrap();
    assert!(!c.server.listen.is_empty());
    assert!(c.routes.len() >= 3);
}

#[test]
fn a_topic_command_runs_under_several_processes_too() {
    let text = |processes: usize| {
        format!(
            "[server]\nprocesses = {processes}\n\n[[route]]\npath = \"/p\"\ntype = \"command\"\n\
             command = [\"/bin/cat\"]\ntopic = \"prices\"\n"
        )
    };
    // Worker 0 runs the program for the box (issue 22): once, whatever `processes` is.
    assert!(parse(&text(1), "t.toml").is_ok());
    assert!(parse(&text(4), "t.toml").is_ok());
    let e = parse("[server]\nprocesses = 0\n", "t.toml").unwrap_err();
    assert!(e.to_string().contains("processes"), "{e}");
}

#[test]
fn full_config() {
    let text = r#"
[server]
listen = ["unix:/tmp/x.sock", "127.0.0.1:9000"]
socket_mode = "0600"
max_streams = 5
max_connections = 6

[stream]
heartbeat = "500ms"
retry = 2
max_lifetime = "4m"

[[route]]
path = "/t"
type = "clock"
interval = "250ms"
"#;
    let c = parse(text, "t.toml").unwrap();
    assert_eq!(
        c.server.listen,
        vec![
            ListenAddr::Unix("/tmp/x.sock".into()),
            ListenAddr::Tcp("127.0.0.1:9000".into())
        ]
    );
    assert_eq!(c.server.socket_mode, Some(0o600));
    assert_eq!(c.stream.heartbeat, Duration::from_millis(500));
    assert_eq!(c.stream.retry, Duration::from_secs(2));
    assert_eq!(c.stream.max_lifetime, Some(Duration::from_secs(240)));
    assert_eq!(routes_of(&c), [("/t".to_string(), "clock")]);
    assert_eq!(c.routes[0].settings.describe(), "Clock every 250ms");
}

fn error_of(text: &str) -> ConfigError {
    parse(text, "bad.toml").unwrap_err()
}

#[test]
fn errors_name_file_line_and_key() {
    let e = error_of("[server]\n\nmax_streams = 0\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("max_streams")));
    assert!(
        e.to_string().starts_with("bad.toml:3: key `max_streams`: "),
        "{e}"
    );

    let e = error_of("[stream]\nheartbeat = \"10 parsecs\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("heartbeat")));
    assert!(e.message.contains("unit"), "{e}");

    let one = parse("[server]\nlisten = \"unix:/tmp/one.sock\"\n", "t").unwrap();
    assert_eq!(
        one.server.listen,
        vec![ListenAddr::Unix(PathBuf::from("/tmp/one.sock"))]
    );
    let e = error_of("[server]\nlisten = [\"nowhere\"]\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("listen")));
    assert!(e.to_string().contains("`nowhere` is neither"), "{e}");
    let e = error_of("[server]\nlisten = 9000\n");
    assert!(e.to_string().contains("or a list of them"), "{e}");

    let e = error_of("[server]\nmax_stream = 3\n");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("unknown field `max_stream`"), "{e}");

    let e = error_of(
        "[[route]]\npath = \"/a\"\ntype = \"clock\"\n[[route]]\npath = \"/a\"\ntype = \"ping\"\n",
    );
    assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("path")));

    let e = error_of("[[route]]\npath = \"a\"\ntype = \"clock\"\n");
    assert_eq!(e.line, Some(2));

    let e = error_of("[[route]]\npath = \"/a\"\ntype = \"teleport\"\n");
    assert!(e.message.contains("teleport"), "{e}");

    let e = error_of("[server]\nmax_streams = 10\nmax_connections = 5\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(3), Some("server.max_connections"))
    );

    let e = error_of("[server\n");
    assert_eq!(e.line, Some(1));
}

#[test]
fn checks_after_parsing_name_the_line_of_the_key_itself() {
    // Two routes with a publish_token: the empty one is the second, on line 9 (scanning
    // the text for `publish_token` found the first); a key in an inline table.
    let text = "[[route]]\npath = \"/a\"\ntype = \"topics\"\npublish_token = \"x\"\n\n\
                [[route]]\npath = \"/b\"\ntype = \"topics\"\npublish_token = \" \"\n";
    let e = error_of(text);
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(9), Some("publish_token")),
        "{e}"
    );
    let e = error_of("server = { max_streams = 10, max_connections = 5 }\n");
    assert_eq!(e.line, Some(1), "{e}");
    let e = error_of("# max_connections = 1\n[server]\nmax_streams = 20000\n");
    assert_eq!(e.line, Some(3), "{e}");
    let e = error_of("# backend = \"redis\"\n[journal]\nbackend = \"redis\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(3), Some("journal.url")),
        "{e}"
    );
}

#[test]
fn cgi_hold_is_a_duration_zero_included() {
    let c = parse("[cgi]\nhold = \"0s\"\n", "t").unwrap();
    assert_eq!(c.cgi.hold, Some(Duration::ZERO));
    let c = parse("[cgi]\nhold = \"25s\"\n", "t").unwrap();
    assert_eq!(c.cgi.hold, Some(Duration::from_secs(25)));
    assert_eq!(parse("", "t").unwrap().cgi.hold, None);
    let e = error_of("[cgi]\ndefault_route = \"/clock\"\nhold = \"briefly\"\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("hold")));
    assert!(e.message.contains("not a duration"), "{e}");
}

#[test]
fn a_topic_on_a_per_stream_command_is_refused_at_its_line() {
    let e = error_of(
        "[[route]]\npath = \"/c\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"echo\"]\n\
         mode = \"per-stream\"\ntopic = \"t\"\n",
    );
    assert_eq!((e.line, e.key.as_deref()), (Some(6), Some("topic")), "{e}");
    assert!(e.message.contains("shared commands"), "{e}");
    let e = error_of(
        "[[route]]\npath = \"/c\"\ntype = \"command\"\ncommand = [\"no-such-program-here\"]\n",
    );
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(4), Some("command")),
        "{e}"
    );
}

#[test]
fn a_key_that_does_nothing_on_its_route_kind_is_refused_with_that_kinds_keys() {
    let e = error_of("[[route]]\npath = \"/t\"\ntype = \"topics\"\ninterval = \"1s\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(4), Some("interval")),
        "{e}"
    );
    assert!(
        e.message
            .contains("a topics route does not take `interval`"),
        "{e}"
    );
    assert!(
        e.message.contains("publish_token") && !e.message.contains("anonymous"),
        "{e}"
    );
    // An unknown key too, with the kind's keys rather than every route's.
    let e = error_of("[[route]]\npath = \"/c\"\ntype = \"clock\"\nintervall = \"1s\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(4), Some("intervall")),
        "{e}"
    );
    assert!(
        e.message.ends_with("(it takes: path, type, interval)"),
        "{e}"
    );
    let e = error_of("[[route]]\npath = \"/s\"\ntype = \"status\"\nhistory_events = 5\n");
    assert!(e.message.contains("takes no key but path and type"), "{e}");
    let e = error_of(
        "[[route]]\npath = \"/m\"\ntype = \"mercure\"\nanonymous = true\npublish_token = \"x\"\n",
    );
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(5), Some("publish_token")),
        "{e}"
    );
    // What each kind takes is accepted.
    parse(
        "[[route]]\npath = \"/c\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"echo\"]\n\
         topic = \"t\"\nhistory_events = 10\npublish_token = \"x\"\nuser_topics = []\n",
        "t",
    )
    .unwrap();
}

#[test]
fn hook_keys_need_one_target_and_say_which_line_is_wrong() {
    let route = "[[route]]\npath = \"/e\"\ntype = \"topics\"\n";
    let ok = format!(
        "{route}hook_fastcgi = \"unix:/run/php/php8.2-fpm.sock\"\nhook_script = \"/srv/app/hooks.php\"\n\
         hook_connect_wait = \"2s\"\nhook_on_timeout = \"allow\"\nhook_body = \"json\"\n"
    );
    let c = parse(&ok, "t").unwrap();
    let h = c.routes.last().unwrap().settings.hooks().unwrap();
    assert!(h.enabled());
    assert_eq!(h.hook_on_timeout, OnTimeout::Allow);
    assert_eq!(h.hook_body, BodyFormat::Json);
    // mercure and command routes take them too.
    parse(
        "[[route]]\npath = \"/c\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"echo\"]\n\
         hook_url = \"http://127.0.0.1:8080/hooks\"\n",
        "t",
    )
    .unwrap();
    for (extra, line, key, says) in [
        (
            "hook_script = \"/srv/hooks.php\"\n",
            4,
            "hook_script",
            "needs hook_fastcgi",
        ),
        (
            "hook_fastcgi = \"unix:/x.sock\"\n",
            4,
            "hook_fastcgi",
            "needs hook_script",
        ),
        (
            "hook_fastcgi = \"unix:/x.sock\"\nhook_script = \"hooks.php\"\n",
            5,
            "hook_script",
            "absolute",
        ),
        ("hook_url = \"ftp://x\"\n", 4, "hook_url", "http://"),
        (
            "hook_url = \"http://x/\"\nhook_fastcgi = \"unix:/x.sock\"\n",
            5,
            "hook_fastcgi",
            "not both",
        ),
        (
            "\nhook_connect_wait = \"2s\"\n",
            5,
            "hook_connect_wait",
            "no hook target",
        ),
        (
            "\nhook_publish = true\n",
            5,
            "hook_publish",
            "no hook target",
        ),
        (
            "hook_url = \"http://x/\"\nhook_secret = \" \"\n",
            5,
            "hook_secret",
            "empty",
        ),
        (
            "hook_url = \"http://x/\"\nhook_on_timeout = \"maybe\"\n",
            5,
            "hook_on_timeout",
            "",
        ),
    ] {
        let e = error_of(&format!("{route}{extra}"));
        assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
        assert!(e.message.contains(says), "{e}");
    }
    // A command route takes no publications.
    let e = error_of(
        "[[route]]\npath = \"/c\"\ntype = \"command\"\ncommand = [\"/bin/true\"]\n\
         hook_url = \"http://x/\"\nhook_publish = true\n",
    );
    assert_eq!(e.key.as_deref(), Some("hook_publish"), "{e}");
    // Two hooked routes whose hook journals would be one folder (`a_b.hooks`).
    let e = error_of(
        "[[route]]\npath = \"/a/b\"\ntype = \"topics\"\nhook_url = \"http://x/\"\n\
         [[route]]\npath = \"/a.b\"\ntype = \"command\"\ncommand = [\"true\"]\nhook_url = \"http://x/\"\n",
    );
    assert_eq!(e.line, Some(6), "{e}");
    assert!(
        e.message
            .contains("share the hook journal folder `a_b.hooks`"),
        "{e}"
    );
    // A zero wait is refused (it would refuse every stream).
    let e = error_of(&format!(
        "{route}hook_url = \"http://x/\"\nhook_connect_wait = \"0s\"\n"
    ));
    assert_eq!(e.key.as_deref(), Some("hook_connect_wait"), "{e}");
    // A kind that does not stream takes none.
    let e = error_of("[[route]]\npath = \"/s\"\ntype = \"status\"\nhook_url = \"http://x/\"\n");
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn presence_keys_are_checked_where_they_cannot_work() {
    let route = "[[route]]\npath = \"/e\"\ntype = \"topics\"\n";
    let c = parse(
        &format!("{route}presence_topic = \"who\"\npresence_users = true\n"),
        "t",
    )
    .unwrap();
    assert!(c
        .routes
        .last()
        .unwrap()
        .settings
        .hooks()
        .unwrap()
        .presence_on());
    for (text, line, key, says) in [
        (
            format!("{route}presence_users = true\n"),
            4,
            "presence_users",
            "needs presence",
        ),
        (
            "[[route]]\npath = \"/c\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"echo\"]\n\
             presence_topic = \"who\"\n"
                .to_string(),
            5,
            "presence_topic",
            "needs the route's journal",
        ),
        (
            format!("[server]\nprocesses = 2\n{route}presence_topic = \"who\"\n"),
            6,
            "presence_topic",
            "each worker's own counts",
        ),
    ] {
        let e = error_of(&text);
        assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}

#[test]
fn mercure_issuers_are_tables_checked_where_they_are_written() {
    let route = "[[route]]\npath = \"/hub\"\ntype = \"mercure\"\n\
                 resource_identifier = \"https://hub.example.com/hub\"\n\
                 public_urls = [\"https://hub.example.com\"]\n";
    let key = "k".repeat(40);
    let ok = format!(
        "{route}\n[[route.issuer]]\nid = \"https://a\"\npublisher_jwt_key = \"{key}\"\n\n\
         [[route.issuer]]\nid = \"https://b\"\nsubscriber_jwt_key = \"{key}\"\nsubscriber_jwt_alg = \"HS512\"\n"
    );
    parse(&ok, "t").unwrap();
    // Keys from a JWK Set (checked, not fetched, by check-config).
    parse(
        &format!("{route}\n[[route.issuer]]\nid = \"https://a\"\nsubscriber_jwks_uri = \"https://a/certs\"\nsubscriber_jwt_alg = \"RS256\"\njwks_refresh = \"1m\"\n"),
        "t",
    )
    .unwrap();
    // The inline form too.
    parse(
        &format!("{route}issuer = [{{id = \"https://a\", subscriber_jwt_key = \"{key}\"}}]\n"),
        "t",
    )
    .unwrap();
    for (extra, line, says) in [
        (format!("[[route.issuer]]\nid = \"a\"\npublisher_key = \"{key}\"\n"), 8, "does not take `publisher_key`"),
        (format!("[[route.issuer]]\npublisher_jwt_key = \"{key}\"\n"), 6, "needs an id"),
        ("[[route.issuer]]\nid = \"a\"\n".to_string(), 7, "has no keys"),
        (
            format!("[[route.issuer]]\nid = \"a\"\npublisher_jwt_key = \"{key}\"\npublisher_jwks_uri = \"https://x/c\"\n"),
            7,
            "two sources of keys",
        ),
        ("[[route.issuer]]\nid = \"a\"\nsubscriber_jwks_uri = \"ftp://x/c\"\n".to_string(), 7, "not an https URL"),
        ("[[route.issuer]]\nid = \"a\"\nsubscriber_jwks_uri = \"http://sso.example/c\"\n".to_string(), 7, "use https"),
        (
            "[[route.issuer]]\nid = \"a\"\nsubscriber_jwks_uri = \"https://x/c\"\njwks_refresh = \"1s\"\n".to_string(),
            7,
            "would hammer",
        ),
        (
            "[[route.issuer]]\nid = \"a\"\nsubscriber_jwks_uri = \"https://x/c\"\nsubscriber_jwt_alg = \"HS256\"\n".to_string(),
            7,
            "HMAC algorithm",
        ),
        ("[[route.issuer]]\nid = \"a\"\npublisher_jwt_key = \"short\"\n".to_string(), 7, "can be guessed"),
        (
            format!("[[route.issuer]]\nid = \"a\"\npublisher_jwt_key = \"{key}\"\n[[route.issuer]]\nid = \"a\"\nsubscriber_jwt_key = \"{key}\"\n"),
            10,
            "listed twice",
        ),
        ("issuer = \"a\"\n".to_string(), 6, "list of tables"),
    ] {
        let e = error_of(&format!("{route}{extra}"));
        assert!(e.message.contains(says), "{extra}: {e}");
        assert_eq!(e.line, Some(line), "{extra}: {e}");
    }
    // Issuers without a pinned identity or public_urls: the Host header would pick the aud.
    let bare = "[[route]]\npath = \"/hub\"\ntype = \"mercure\"\n";
    let e = error_of(&format!(
        "{bare}[[route.issuer]]\nid = \"a\"\npublisher_jwt_key = \"{key}\"\n"
    ));
    assert!(e.message.contains("set resource_identifier"), "{e}");
    let e = error_of(&route.replace("https://hub.example.com/hub", "hub.example.com"));
    assert_eq!(e.key.as_deref(), Some("resource_identifier"), "{e}");
}
