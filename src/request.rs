//! The transport-neutral request: method, routing path, query, headers and body, built from
//! CGI-style variables. FastCGI PARAMS and a CGI environment both become a [`Request`].

use bytes::Bytes;

/// Which variable names the path that routes are matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathFrom {
    /// FastCGI daemons: `REQUEST_URI` (path part), else `DOCUMENT_URI`, else
    /// `SCRIPT_NAME` + `PATH_INFO`. Works the same under nginx, Apache and lighttpd.
    RequestUri,
    /// CGI programs: `PATH_INFO` (`/cgi-bin/events.cgi/clock` routes as `/clock`).
    PathInfo,
}

/// One request as the application sees it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `REQUEST_METHOD` as given (case-sensitive).
    pub method: String,
    /// Percent-decoded path used for routing.
    pub path: String,
    /// Raw `QUERY_STRING`.
    pub query: String,
    /// `PATH_INFO`, tried when `path` matches no route (a FastCGI app mounted as a script, as
    /// mod_fcgid does: `/fastsse.fcgi/clock` routes as `/clock`).
    pub path_info: String,
    /// Request body (at most the configured `max_body_bytes`).
    pub body: Bytes,
    /// The browser's address as the web server reports it (`REMOTE_ADDR:REMOTE_PORT`).
    pub peer: String,
    /// An id for logs and error bodies, unique on this host (process id and a counter).
    pub id: String,
    vars: Vec<(Bytes, Bytes)>,
}

/// Decodes `%XX` escapes (a path, a path segment), lossily into UTF-8; a `%` not followed by
/// two hex digits stays as it is.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Splits an `application/x-www-form-urlencoded` string (a query, a form body) into decoded
/// pairs, as browsers encode them (`+` is a space).
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `<pid>-<n>`: unique among the processes of a host (a CGI process serves one request).
fn next_request_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

impl Request {
    /// Builds a request from CGI-style variables (FastCGI PARAMS or a CGI environment).
    pub fn from_vars(vars: Vec<(Bytes, Bytes)>, body: Bytes, path_from: PathFrom) -> Request {
        let mut r = Request {
            method: String::new(),
            path: String::new(),
            query: String::new(),
            path_info: String::new(),
            body,
            peer: String::new(),
            id: next_request_id(),
            vars,
        };
        r.method = r.var("REQUEST_METHOD").unwrap_or("GET").to_string();
        r.query = r.var("QUERY_STRING").unwrap_or("").to_string();
        r.peer = match (r.var("REMOTE_ADDR"), r.var("REMOTE_PORT")) {
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.to_string(),
            _ => "-".to_string(),
        };
        let non_empty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
        let raw = match path_from {
            PathFrom::PathInfo => non_empty(r.var("PATH_INFO")).unwrap_or_default(),
            PathFrom::RequestUri => non_empty(r.var("REQUEST_URI"))
                .map(|u| u.split('?').next().unwrap_or("").to_string())
                .or_else(|| non_empty(r.var("DOCUMENT_URI")))
                .unwrap_or_else(|| {
                    format!(
                        "{}{}",
                        r.var("SCRIPT_NAME").unwrap_or(""),
                        r.var("PATH_INFO").unwrap_or("")
                    )
                }),
        };
        // An absolute-form request target (`http://host/path`) routes by its path.
        let raw = match raw.find("://") {
            Some(p) if !raw.starts_with('/') => {
                let rest = &raw[p + 3..];
                rest.find('/')
                    .map(|s| rest[s..].to_string())
                    .unwrap_or_else(|| "/".into())
            }
            _ => raw,
        };
        r.path = percent_decode(&raw);
        r.path_info = r.var("PATH_INFO").unwrap_or("").to_string();
        r
    }

    /// A variable as UTF-8, if present and valid UTF-8. Of duplicates the last wins, as in
    /// php-fpm: a `fastcgi_param` written after `include fastcgi_params` overrides it.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| &k[..] == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every variable that is valid UTF-8, in the order received.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// An HTTP request header by its HTTP name (`Last-Event-ID` reads `HTTP_LAST_EVENT_ID`).
    pub fn header(&self, name: &str) -> Option<&str> {
        let var: String = "HTTP_"
            .chars()
            .chain(name.chars().map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            }))
            .collect();
        self.var(&var)
    }

    /// Decoded values of query parameter `key`, in order.
    pub fn query_values(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = parse_form(&self.query)
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        // Kept for a stream's life (its topics): no spare room.
        v.shrink_to_fit();
        v
    }

    /// The id the client last saw: the `Last-Event-ID` header, else `?lastEventId=` (for
    /// clients that cannot set headers). Untrusted: any length, any content.
    /// A header that is not valid UTF-8 comes back with U+FFFD in it (never a valid id), so
    /// it is refused like any other garbage rather than taken as absent.
    pub fn last_event_id(&self) -> Option<String> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| &k[..] == b"HTTP_LAST_EVENT_ID")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .or_else(|| self.query_values("lastEventId").into_iter().next())
    }

    /// Whether the client asked for headers only.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(vars: &[(&str, &str)], from: PathFrom) -> Request {
        let vars = vars
            .iter()
            .map(|(k, v)| {
                (
                    Bytes::copy_from_slice(k.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect();
        Request::from_vars(vars, Bytes::new(), from)
    }

    #[test]
    fn path_from_each_server_style() {
        let nginx = req(
            &[("REQUEST_URI", "/cl%6Fck?x=1"), ("DOCUMENT_URI", "/clock")],
            PathFrom::RequestUri,
        );
        assert_eq!(nginx.path, "/clock");
        let apache = req(
            &[("SCRIPT_NAME", "/events"), ("PATH_INFO", "/a")],
            PathFrom::RequestUri,
        );
        assert_eq!(apache.path, "/events/a");
        let cgi = req(
            &[("SCRIPT_NAME", "/cgi-bin/e.cgi"), ("PATH_INFO", "/clock")],
            PathFrom::PathInfo,
        );
        assert_eq!(cgi.path, "/clock");
        let proxy = req(&[("REQUEST_URI", "http://h/ping?q")], PathFrom::RequestUri);
        assert_eq!(proxy.path, "/ping");
    }

    #[test]
    fn headers_query_and_last_event_id() {
        let r = req(
            &[
                ("HTTP_LAST_EVENT_ID", "42"),
                ("QUERY_STRING", "topic=a&topic=b%20c&x"),
            ],
            PathFrom::RequestUri,
        );
        assert_eq!(r.last_event_id().as_deref(), Some("42"));
        assert_eq!(r.query_values("topic"), vec!["a", "b c"]);
        let r = req(&[("QUERY_STRING", "lastEventId=7")], PathFrom::RequestUri);
        assert_eq!(r.last_event_id().as_deref(), Some("7"));
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz+"), "%zz+");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(
            parse_form("a=%zz+b&&=x&c&d=1=2"),
            [("a", "%zz b"), ("", "x"), ("c", ""), ("d", "1=2")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
