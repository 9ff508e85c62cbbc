//! The README's install steps for nginx, run exactly as written (only `sudo` dropped and
//! `/etc/nginx` pointed at a copy) on a copy of Debian's own /etc/nginx, twice (every step must
//! be safe to run again); then that nginx, as Debian configures it, serves fastsse.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// The nginx lines of the README's Debian install block.
fn readme_nginx_steps() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme
        .find("<!-- install-debian-nginx")
        .expect("the install block marker");
    let block = &readme[at..];
    let start = block.find("```sh\n").unwrap() + 6;
    let end = start + block[start..].find("```").unwrap();
    block[start..end]
        .lines()
        .filter(|l| l.contains("/etc/nginx") && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_steps_make_debians_stock_nginx_serve_fastsse() {
    if !have("nginx") || !std::path::Path::new("/etc/nginx/sites-available/default").exists() {
        return;
    }
    let steps = readme_nginx_steps();
    assert!(steps.len() >= 4, "{steps:?}");
    let root = TempDir::new("debian-nginx");
    let etc = root.path("etc/nginx");
    std::fs::create_dir_all(root.path("etc")).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg("/etc/nginx")
        .arg(&etc)
        .status()
        .unwrap()
        .success());
    let etc_s = etc.display().to_string();
    // Debian's sites-enabled/default is a symlink into /etc/nginx: point it into the copy.
    for dir in ["sites-enabled", "modules-enabled"] {
        for e in std::fs::read_dir(etc.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(e.path()) {
                let t = target.display().to_string();
                if t.starts_with("/etc/nginx") {
                    std::fs::remove_file(e.path()).unwrap();
                    std::os::unix::fs::symlink(t.replace("/etc/nginx", &etc_s), e.path()).unwrap();
                }
            }
        }
    }
    // The reload is the running system's business; this test starts its own nginx below.
    for round in 0..2 {
        for step in steps.iter().filter(|s| !s.contains("systemctl reload")) {
            let cmd = step.replace("sudo ", "").replace("/etc/nginx", &etc_s);
            let out = Command::new("bash")
                .arg("-c")
                .arg(&cmd)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "round {round}: `{cmd}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let main = std::fs::read_to_string(etc.join("nginx.conf")).unwrap();
    assert!(main.contains("worker_connections 12000;"), "{main}");
    assert_eq!(
        main.matches("worker_rlimit_nofile 25000;").count(),
        1,
        "{main}"
    );
    let site = std::fs::read_to_string(etc.join("sites-available/default")).unwrap();
    assert_eq!(
        site.matches("include snippets/fastsse.conf;").count(),
        1,
        "{site}"
    );

    // fastsse, with a socket nginx's workers (www-data) may use.
    let d = Daemon::start(
        "[server]\nsocket_mode = \"0666\"\n\n[[route]]\npath = \"/clock\"\ntype = \"clock\"\ninterval = \"200ms\"\n\n[[route]]\npath = \"/status\"\ntype = \"status\"\n",
    );
    // Point the copy at this test's port, socket, pid and logs; everything else is Debian's.
    let port = free_port();
    let logs = root.path("log");
    std::fs::create_dir_all(&logs).unwrap();
    for entry in walk(&etc) {
        let Ok(text) = std::fs::read_to_string(&entry) else {
            continue;
        };
        let fixed = text
            .replace("/etc/nginx", &etc_s)
            .replace(
                "listen 80 default_server;",
                &format!("listen 127.0.0.1:{port} default_server;"),
            )
            .replace("listen [::]:80 default_server;", "")
            .replace(
                "/run/nginx.pid",
                &root.path("nginx.pid").display().to_string(),
            )
            .replace("/var/log/nginx", &logs.display().to_string())
            .replace(
                "unix:/run/fastsse/fastsse.sock",
                &format!("unix:{}", d.socket.display()),
            );
        if fixed != text {
            std::fs::write(&entry, fixed).unwrap();
        }
    }
    let conf = etc.join("nginx.conf");
    let t = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        t.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    let mut nginx = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("nginx", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut s = HttpStream::open(port, "GET", "/clock", &[]);
    let status = s.status;
    let ctype = s.header("content-type").map(str::to_string);
    let first = s.next_event();
    let mut st = HttpStream::open(port, "GET", "/status", &[]);
    let status_doc = (st.status, st.rest());
    // QUIT, not KILL: a killed master leaves its (www-data) workers running.
    let _ = Command::new("kill")
        .args(["-QUIT", &nginx.id().to_string()])
        .status();
    let start = std::time::Instant::now();
    while nginx.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nginx.kill();
    let _ = nginx.wait();
    assert_eq!(status, 200);
    assert_eq!(ctype.as_deref(), Some("text/event-stream"));
    assert!(first.is_some(), "no event through Debian's nginx");
    assert_eq!(status_doc.0, 200, "{}", status_doc.1);
    assert!(status_doc.1.contains("active_streams"), "{}", status_doc.1);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&p));
        } else if ft.is_file() {
            out.push(p);
        }
    }
    out
}
