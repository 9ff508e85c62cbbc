//! The bench's pictures: one self-contained HTML page (inline SVG, no scripts, no external
//! assets) with delivery latency, open streams and events per second over time, one line per
//! run, and the summary table with the runs side by side. `--report run.html` writes it for one
//! run; `fastsse bench report` for several saved `--json` reports (what `scripts/compare.sh`
//! does), and can write each chart as its own SVG file for a README.

use std::fmt::Write as _;
use std::path::Path;

use super::report::Report;

/// Line colours, one per run (colour-blind-safe Okabe–Ito order).
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];
const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

/// An axis from 0 covering `v`: (its end, the step between ticks), the step round.
fn axis(v: f64) -> (f64, f64) {
    let step = nice_max(v / 5.0);
    (((v / step).ceil() * step).max(step), step)
}

fn label(v: f64) -> String {
    if v >= 10_000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// One line of a chart: its name, whether it is dashed, and its points (seconds, value).
pub type Line = (String, bool, Vec<(f64, f64)>);

/// One chart with `lines`, the y axis in `unit`.
pub fn line_chart(title: &str, unit: &str, lines: &[Line]) -> String {
    let (xmax, xstep) = axis(
        lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.0))
            .fold(1.0, f64::max),
    );
    let (ymax, ystep) = axis(
        lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |v: f64| LEFT + v / xmax * pw;
    let y = |v: f64| TOP + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="{W}" height="{H}" fill="#fff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"##,
        esc(title)
    );
    for i in 0..=(ymax / ystep).round() as usize {
        let v = ystep * i as f64;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            label(v),
            y = y(v),
        );
    }
    for i in 0..=(xmax / xstep).round() as usize {
        let t = xstep * i as f64;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{}s</text>"##,
            x(t),
            H - BOTTOM + 16.0,
            label(t)
        );
    }
    let _ = write!(
        s,
        r##"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(unit)
    );
    draw_lines(&mut s, lines, &x, &|v: f64| y(v.min(ymax)));
    s.push_str("</svg>");
    s
}

/// The lines of a chart and their legend; `x` and `y` place a point.
fn draw_lines(s: &mut String, lines: &[Line], x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64) {
    let mut legend_x = LEFT;
    for (i, (name, dashed, pts)) in lines.iter().enumerate() {
        // A run's p99 and p50 lines share its colour.
        let paired = lines.iter().any(|l| l.1);
        let colour = COLOURS[(if paired { i / 2 } else { i }) % COLOURS.len()];
        let dash = if *dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let path: Vec<String> = pts
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"##,
                path.join(" ")
            );
        }
        let _ = write!(
            s,
            r##"<line x1="{legend_x}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"##,
            legend_x + 18.0,
            legend_x + 22.0,
            H - 6.0,
            esc(name),
            ly = H - 10.0,
        );
        legend_x += 30.0 + 7.0 * name.len() as f64;
    }
}

/// The three charts of `runs`, named as files (`latency`, `connected`, `events`).
pub fn charts(runs: &[(String, Report)]) -> Vec<(&'static str, String)> {
    let series = |f: &dyn Fn(&super::series::Second) -> f64, r: &Report, latency: bool| {
        r.series
            .iter()
            // A second without events has no latency (not a latency of 0).
            .filter(|s| !latency || s.events > 0)
            .map(|s| (s.t as f64, f(s)))
            .collect::<Vec<_>>()
    };
    let mut latency = Vec::new();
    let (mut connected, mut events) = (Vec::new(), Vec::new());
    for (name, r) in runs {
        latency.push((format!("{name} p99"), false, series(&|s| s.p99_ms, r, true)));
        latency.push((format!("{name} p50"), true, series(&|s| s.p50_ms, r, true)));
        connected.push((
            name.clone(),
            false,
            series(&|s| s.connected as f64, r, false),
        ));
        events.push((name.clone(), false, series(&|s| s.events as f64, r, false)));
    }
    vec![
        (
            "latency",
            line_chart(
                "Delivery latency per second (p99 solid, p50 dashed)",
                "ms",
                &latency,
            ),
        ),
        (
            "connected",
            line_chart("Open streams", "streams", &connected),
        ),
        (
            "events",
            line_chart("Events delivered per second", "events/s", &events),
        ),
    ]
    .into_iter()
    .chain(sample_charts(runs))
    .collect()
}

/// The server's own figures (`--sample`), a chart each where a run has them: (file name,
/// title, unit, divisor).
const SAMPLED: [(&str, &str, &str, &str, f64); 5] = [
    (
        "process_resident_memory_bytes",
        "rss",
        "Server resident memory",
        "MB",
        1e6,
    ),
    ("process_open_fds", "fds", "Server open files", "files", 1.0),
    ("fastsse_tasks", "tasks", "Server tasks", "tasks", 1.0),
    (
        "fastsse_journal_bytes",
        "journal",
        "Journal on disk",
        "MB",
        1e6,
    ),
    (
        "fastsse_streams_active",
        "streams",
        "Server streams",
        "streams",
        1.0,
    ),
];

fn sample_charts(runs: &[(String, Report)]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (family, file, title, unit, div) in SAMPLED {
        let lines: Vec<Line> = runs
            .iter()
            .map(|(name, r)| {
                let points = r
                    .samples
                    .iter()
                    .filter_map(|s| s.values.get(family).map(|v| (s.t as f64, v / div)))
                    .collect::<Vec<_>>();
                (name.clone(), false, points)
            })
            .filter(|l| !l.2.is_empty())
            .collect();
        if !lines.is_empty() {
            out.push((
                file,
                line_chart(&format!("{title} (sampled)"), unit, &lines),
            ));
        }
    }
    out
}

/// The summary table: one column per run.
fn table(runs: &[(String, Report)]) -> String {
    type Row = (&'static str, fn(&Report) -> String);
    let rows: [Row; 14] = [
        ("protocol", |r| r.protocol.clone()),
        ("subscribers (peak)", |r| r.subscribers.to_string()),
        ("stages", |r| r.stages.clone().unwrap_or_else(|| "-".into())),
        ("transport connections", |r| {
            r.transport_connections.to_string()
        }),
        ("connections failed", |r| {
            r.connections_failed.values().sum::<u64>().to_string()
        }),
        ("published (failed)", |r| {
            format!("{} ({})", r.published, r.publish_failed)
        }),
        ("delivered / expected", |r| {
            format!(
                "{} / {}",
                r.events_expected - r.events_lost,
                r.events_expected
            )
        }),
        ("lost", |r| r.events_lost.to_string()),
        ("duplicated", |r| r.events_duplicated.to_string()),
        ("out of order", |r| r.events_out_of_order.to_string()),
        ("latency p50 / p99 ms", |r| {
            format!("{:.1} / {:.1}", r.latency_ms.p50, r.latency_ms.p99)
        }),
        ("latency p99.9 / max ms", |r| {
            format!("{:.1} / {:.1}", r.latency_ms.p999, r.latency_ms.max)
        }),
        ("first event p50 / p99 ms", |r| {
            format!("{:.1} / {:.1}", r.first_event_ms.p50, r.first_event_ms.p99)
        }),
        ("verdict", |r| {
            if r.failures.is_empty() {
                "pass".into()
            } else {
                format!("FAIL: {}", r.failures.join("; "))
            }
        }),
    ];
    let mut s = String::from("<table><tr><th></th>");
    for (name, _) in runs {
        let _ = write!(s, "<th>{}</th>", esc(name));
    }
    s.push_str("</tr>");
    for (what, f) in rows {
        let _ = write!(s, "<tr><td>{what}</td>");
        for (_, r) in runs {
            let _ = write!(s, "<td>{}</td>", esc(&f(r)));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

/// The whole page.
pub fn page(title: &str, runs: &[(String, Report)]) -> String {
    let mut s = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:820px}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
         td:first-child{{text-align:left}}svg{{display:block;margin:1em 0}}</style></head>\
         <body><h1>{t}</h1>",
        t = esc(title)
    );
    s.push_str(&table(runs));
    for (_, svg) in charts(runs) {
        s.push_str(&svg);
    }
    s.push_str("</body></html>\n");
    s
}

/// Writes the page to `path`, and each chart as `<dir>/<name>.svg` when `svg_dir` is given.
pub fn write(
    path: &Path,
    svg_dir: Option<&Path>,
    title: &str,
    runs: &[(String, Report)],
) -> Result<(), String> {
    std::fs::write(path, page(title, runs))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    if let Some(dir) = svg_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, svg) in charts(runs) {
            let p = dir.join(format!("{name}.svg"));
            std::fs::write(&p, svg).map_err(|e| format!("writing {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(axis(11.0), (15.0, 5.0));
        assert_eq!(axis(1000.0), (1000.0, 200.0));
        assert_eq!(axis(26_000.0), (30_000.0, 10_000.0));
        assert_eq!(axis(0.0), (1.0, 1.0));
        assert_eq!(label(30_000.0), "30k");
        assert_eq!(label(5.0), "5");
        assert_eq!(label(0.5), "0.5");
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(50_001.0), 100_000.0);
    }

    #[test]
    fn a_chart_is_svg_with_a_line_per_series_and_escaped_names() {
        let svg = line_chart(
            "t<1>",
            "ms",
            &[
                ("a&b".into(), false, vec![(1.0, 2.0), (2.0, 4.0)]),
                ("c".into(), true, vec![]),
            ],
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("t&lt;1&gt;") && svg.contains("a&amp;b"));
        assert!(!svg.contains("<script"));
    }
}
