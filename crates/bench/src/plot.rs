//! A small hand-rolled SVG writer for a cluster run's time series (`mako bench --plot`):
//! throughput and aborts per 100 ms on top, release latency p50/p99 (log scale) below, with
//! the leader crash and the first release after it marked.

use std::fmt::Write;

use crate::cluster::ClusterReport;
use crate::series::Bucket;

const W: f64 = 960.0;
const H: f64 = 620.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;

/// A plotting area: data coordinates to SVG coordinates.
struct Panel {
    top: f64,
    height: f64,
    xmax: f64,
    ymin: f64,
    ymax: f64,
    log: bool,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.xmax).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let f = if self.log {
            let (lo, hi) = (self.ymin.log10(), self.ymax.log10());
            (v.max(self.ymin).log10() - lo) / (hi - lo)
        } else {
            v / self.ymax
        };
        self.top + self.height * (1.0 - f.clamp(0.0, 1.0))
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }
}

/// A round step giving about `n` ticks up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// A number for an axis label (thousands as `k`).
fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// A polyline through `pts`, skipping `None` (a gap splits the line).
fn polyline(out: &mut String, pts: &[(f64, Option<f64>)], color: &str, width: f64, dash: &str) {
    let mut seg: Vec<String> = Vec::new();
    let flush = |seg: &mut Vec<String>, out: &mut String| {
        if seg.len() > 1 {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" {dash} points="{}"/>"#,
                seg.join(" ")
            );
        } else if let Some(p) = seg.first() {
            let mut it = p.split(',');
            if let (Some(x), Some(y)) = (it.next(), it.next()) {
                let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="1.5" fill="{color}"/>"#);
            }
        }
        seg.clear();
    };
    for &(x, y) in pts {
        match y {
            Some(y) => seg.push(format!("{x:.1},{y:.1}")),
            None => flush(&mut seg, out),
        }
    }
    flush(&mut seg, out);
}

fn frame(out: &mut String, p: &Panel, title: &str, xticks: f64) {
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        p.top,
        W - LEFT - RIGHT,
        p.height
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{title}</text>"#,
        p.top - 8.0
    );
    let mut t = 0.0;
    while t <= p.xmax + 1e-9 {
        let x = p.x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            p.top,
            p.bottom(),
            p.bottom() + 14.0,
            label(t)
        );
        t += xticks;
    }
    if p.log {
        // 1, 2, 5 per decade when the axis spans few decades, else decades only.
        let few = p.ymax / p.ymin <= 1000.0;
        let mut v = 10f64.powf(p.ymin.log10().floor());
        while v <= p.ymax * 1.0001 {
            for m in if few {
                &[1.0, 2.0, 5.0][..]
            } else {
                &[1.0][..]
            } {
                let t = v * m;
                if t >= p.ymin * 0.9999 && t <= p.ymax * 1.0001 {
                    tick_y(out, p, t);
                }
            }
            v *= 10.0;
        }
    } else {
        let step = nice_step(p.ymax, 5.0);
        let mut v = 0.0;
        while v <= p.ymax * 1.0001 {
            tick_y(out, p, v);
            v += step;
        }
    }
}

fn tick_y(out: &mut String, p: &Panel, v: f64) {
    let y = p.y(v);
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
        W - RIGHT,
        LEFT - 6.0,
        y + 4.0,
        label(v)
    );
}

fn marker(out: &mut String, panels: &[&Panel], t: f64, color: &str, text: &str, row: f64) {
    for p in panels {
        let x = p.x(t);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{color}" stroke-width="1.5" stroke-dasharray="5,3"/>"#,
            p.top,
            p.bottom()
        );
    }
    if let Some(p) = panels.first() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{color}">{text}</text>"#,
            p.x(t) + 4.0,
            p.top + 14.0 + 14.0 * row
        );
    }
}

fn legend(out: &mut String, x: f64, y: f64, items: &[(&str, &str)]) {
    let mut x = x;
    for (color, name) in items {
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2.5"/><text x="{}" y="{}" font-size="11">{name}</text>"#,
            x + 18.0,
            x + 22.0,
            y + 4.0
        );
        x += 30.0 + 7.0 * name.len() as f64;
    }
}

/// The run's time series as an SVG document.
pub fn svg(r: &ClusterReport) -> String {
    let s = &r.series;
    let bucket = r.bucket_ms as f64 / 1e3;
    let xmax = (s.len() as f64 * bucket).max(bucket);
    let xticks = nice_step(xmax, 10.0);
    let rate = |v: u64| v as f64 / bucket;
    let mid = |b: &Bucket| b.start_ms as f64 / 1e3 + bucket / 2.0;
    let tmax = s
        .iter()
        .map(|b| rate(b.spec.max(b.released).max(b.aborted() + b.unknown)))
        .fold(1.0, f64::max);
    let top = Panel {
        top: 70.0,
        height: 280.0,
        xmax,
        ymin: 0.0,
        ymax: tmax * 1.05,
        log: false,
    };
    let lat: Vec<f64> = s
        .iter()
        .flat_map(|b| [b.p50_us, b.p99_us])
        .flatten()
        .map(|us| us / 1e3)
        .collect();
    let lmax = lat.iter().copied().fold(1.0, f64::max);
    let lmin = lat.iter().copied().fold(lmax, f64::min);
    let bottom = Panel {
        top: 420.0,
        height: 160.0,
        xmax,
        ymin: 10f64.powf((lmin.max(1e-3)).log10().floor()),
        ymax: 10f64
            .powf(lmax.log10().ceil())
            .max(10f64.powf((lmin.max(1e-3)).log10().floor()) * 10.0),
        log: true,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">mako bench: {} shards x {} replicas, {} worker(s)/shard, {}% read-only, durability {}, election timeout {}-{} ms</text>"#,
        r.shards, r.replicas, r.threads, r.read_pct, r.durability, r.election_ms.0, r.election_ms.1
    );
    frame(
        &mut out,
        &top,
        &format!("transactions per second ({} ms buckets)", r.bucket_ms),
        xticks,
    );
    frame(&mut out, &bottom, "release latency, ms (log scale)", xticks);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">seconds into the measured phase</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        bottom.bottom() + 32.0
    );
    let series = |f: &dyn Fn(&Bucket) -> Option<f64>, p: &Panel| -> Vec<(f64, Option<f64>)> {
        s.iter()
            .map(|b| (p.x(mid(b)), f(b).map(|v| p.y(v))))
            .collect()
    };
    polyline(
        &mut out,
        &series(&|b| Some(rate(b.spec)), &top),
        "#9ecae1",
        1.5,
        "",
    );
    polyline(
        &mut out,
        &series(&|b| Some(rate(b.released)), &top),
        "#08519c",
        2.5,
        "",
    );
    polyline(
        &mut out,
        &series(&|b| Some(rate(b.aborted() + b.unknown)), &top),
        "#e6550d",
        1.5,
        "",
    );
    legend(
        &mut out,
        LEFT + 330.0,
        top.top - 12.0,
        &[
            ("#08519c", "released/s"),
            ("#9ecae1", "speculative/s"),
            ("#e6550d", "aborted+unknown/s"),
        ],
    );
    polyline(
        &mut out,
        &series(&|b| b.p50_us.map(|u| u / 1e3), &bottom),
        "#31a354",
        2.0,
        "",
    );
    polyline(
        &mut out,
        &series(&|b| b.p99_us.map(|u| u / 1e3), &bottom),
        "#756bb1",
        2.0,
        "",
    );
    legend(
        &mut out,
        LEFT + 330.0,
        bottom.top - 12.0,
        &[("#31a354", "p50"), ("#756bb1", "p99")],
    );
    if let Some(f) = &r.failover {
        let at = f.at_ms / 1e3;
        marker(
            &mut out,
            &[&top, &bottom],
            at,
            "#d62728",
            &format!("leader of shard 0 crashed ({:.2} s)", at),
            0.0,
        );
        if let Some(ms) = f.first_release_ms {
            marker(
                &mut out,
                &[&top, &bottom],
                at + ms / 1e3,
                "#2ca02c",
                &format!("first release after the crash: +{ms:.0} ms"),
                1.0,
            );
        }
    }
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(10.0, 10.0), 1.0);
        assert_eq!(nice_step(8.0, 10.0), 1.0);
        assert_eq!(nice_step(130_000.0, 5.0), 50_000.0);
        assert_eq!(label(50_000.0), "50k");
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(0.30000000000000004), "0.3");
    }
}
