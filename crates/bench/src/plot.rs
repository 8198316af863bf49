//! `--plot FILE.svg`: one SVG picture of a run, drawn with `plotters` (SVG backend only, no
//! font files: text stays `<text>` elements). Throughput per 100 ms bucket on top; below, the
//! latency distribution (percentile on a "nines" axis, latency on a log axis) and, for runs
//! that keep per-bucket latency, release latency p50/p99 over time. Leader crash markers are
//! drawn on the time panels. [`Figure`] is the bench-independent description; [`svg`],
//! [`group_svg`] and [`crate::remote::plot_svg`] build one from a report.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

use crate::cluster::ClusterReport;
use crate::group::GroupBenchReport;
use crate::series::{Bucket, MAX_NINES, Quantile, nines_of_pct, pct_of_nines};

/// Width of the picture, pixels.
const W: u32 = 1200;
/// Height of the picture, pixels.
const H: u32 = 820;

/// Colors of the lines (RGB).
pub mod colors {
    /// Released (or committed entries) per second.
    pub const RELEASED: (u8, u8, u8) = (8, 81, 156);
    /// Speculative commits per second.
    pub const SPECULATIVE: (u8, u8, u8) = (120, 170, 210);
    /// Aborts and unknown outcomes per second.
    pub const ABORTED: (u8, u8, u8) = (230, 85, 13);
    /// Commit latency.
    pub const COMMIT: (u8, u8, u8) = (230, 120, 20);
    /// Release latency.
    pub const RELEASE: (u8, u8, u8) = (8, 81, 156);
    /// Release latency p50 over time.
    pub const P50: (u8, u8, u8) = (49, 163, 84);
    /// Release latency p99 over time.
    pub const P99: (u8, u8, u8) = (117, 107, 177);
    /// The leader crash.
    pub const CRASH: (u8, u8, u8) = (214, 39, 40);
    /// The first release after the crash.
    pub const RECOVERED: (u8, u8, u8) = (44, 160, 44);
}

/// Errors drawing a picture.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend failed (it writes to a string, so this is not expected).
    #[error("drawing the plot: {0}")]
    Draw(String),
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        PlotError::Draw(e.to_string())
    }
}

/// One line of a panel: its legend name, color, and points (`None` leaves a gap).
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend entry.
    pub name: String,
    /// RGB color.
    pub color: (u8, u8, u8),
    /// Stroke width, pixels.
    pub width: u32,
    /// Points `(x, y)`; a `None` y splits the line.
    pub points: Vec<(f64, Option<f64>)>,
}

impl Line {
    /// A line through every point.
    pub fn new(name: impl Into<String>, color: (u8, u8, u8), points: Vec<(f64, f64)>) -> Line {
        Line {
            name: name.into(),
            color,
            width: 2,
            points: points.into_iter().map(|(x, y)| (x, Some(y))).collect(),
        }
    }

    /// A latency distribution: x in "nines" of the percentile, y in ms.
    pub fn distribution(name: impl Into<String>, color: (u8, u8, u8), q: &[Quantile]) -> Line {
        Line::new(
            name,
            color,
            q.iter()
                .map(|q| (nines_of_pct(q.pct), q.us / 1e3))
                .collect(),
        )
    }

    fn ys(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().filter_map(|p| p.1)
    }
}

/// A vertical marker on the time panels (e.g. a leader crash).
#[derive(Debug, Clone)]
pub struct Marker {
    /// Seconds into the measured phase.
    pub at_s: f64,
    /// Legend and label text.
    pub label: String,
    /// RGB color.
    pub color: (u8, u8, u8),
}

/// What one picture shows, whatever bench produced it.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    /// Title lines (the run's parameters).
    pub title: Vec<String>,
    /// Width of a throughput bucket, ms.
    pub bucket_ms: u64,
    /// Length of the measured phase, seconds (the time axis).
    pub secs: f64,
    /// Unit of the throughput panel, e.g. `txn/s` or `entries/s`.
    pub rate_unit: String,
    /// Throughput lines: x seconds, y per second.
    pub rates: Vec<Line>,
    /// Latency over time: x seconds, y ms (empty: no such panel).
    pub latency_over_time: Vec<Line>,
    /// What the latency lines measure, e.g. `commit and release latency`.
    pub latency_name: String,
    /// Latency distributions: x "nines" of the percentile, y ms.
    pub distributions: Vec<Line>,
    /// Markers on the time panels.
    pub markers: Vec<Marker>,
}

fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

/// A number for an axis label: at most 3 significant digits, thousands as `k`, millions as `M`.
fn label(v: f64) -> String {
    let (v, suffix) = if v.abs() >= 1e6 {
        (v / 1e6, "M")
    } else if v.abs() >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if v == 0.0 {
        0
    } else {
        (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{suffix}")
}

/// The percentile at `nines`, for the distribution's x labels (`99.9`).
fn pct_label(nines: f64) -> String {
    let s = format!("{:.2}", pct_of_nines(nines));
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Log-axis bounds (ms) around `ys`: whole decades, at least one decade, floor 1 µs.
fn log_bounds(ys: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = ys
        .filter(|y| y.is_finite() && *y > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
    if hi <= 0.0 {
        return (0.01, 10.0);
    }
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// Draws `lines` (and, with `markers`, the vertical markers up to `marker_top`) on a chart.
fn draw_lines<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    lines: &[Line],
    markers: &[Marker],
    marker_span: (f64, f64),
    label_markers: bool,
) -> Result<(), PlotError>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    for line in lines {
        let color = rgb(line.color);
        let style = color.stroke_width(line.width);
        let mut labelled = false;
        let mut seg: Vec<(f64, f64)> = Vec::new();
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        for &(x, y) in &line.points {
            match y {
                Some(y) => seg.push((x, y)),
                None => segments.push(std::mem::take(&mut seg)),
            }
        }
        segments.push(seg);
        for seg in segments.into_iter().filter(|s| !s.is_empty()) {
            let drawn = if seg.len() == 1 {
                chart.draw_series(seg.into_iter().map(|p| Circle::new(p, 2, color.filled())))?
            } else {
                chart.draw_series(LineSeries::new(seg, style))?
            };
            if !labelled {
                labelled = true;
                drawn.label(line.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
            }
        }
    }
    for m in markers {
        let color = rgb(m.color);
        let drawn = chart.draw_series(DashedLineSeries::new(
            vec![(m.at_s, marker_span.0), (m.at_s, marker_span.1)],
            6,
            4,
            color.stroke_width(2),
        ))?;
        if label_markers {
            drawn.label(m.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
    }
    Ok(())
}

/// A panel with time (seconds) on x and `y` on the y axis.
#[allow(clippy::too_many_arguments)]
fn time_panel<DB, YS>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    secs: f64,
    y: YS,
    y_desc: &str,
    marker_span: (f64, f64),
    lines: &[Line],
    markers: &[Marker],
    legend_at: SeriesLabelPosition,
    label_markers: bool,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    YS: AsRangedCoord<Value = f64>,
    YS::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 19))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..secs, y)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured phase")
        .y_desc(y_desc)
        .x_label_formatter(&|v| label(*v))
        .y_label_formatter(&|v| label(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    draw_lines(&mut chart, lines, markers, marker_span, label_markers)?;
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.7))
        .border_style(RGBColor(150, 150, 150))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

/// The latency distribution panel: percentile ("nines") on x, latency (ms, log) on y.
fn distribution_panel<DB>(
    area: &DrawingArea<DB, Shift>,
    what: &str,
    lines: &[Line],
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let (lo, hi) = log_bounds(lines.iter().flat_map(Line::ys));
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{what}: distribution (log scale)"),
            ("sans-serif", 19),
        )
        .margin(10)
        .margin_right(30)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..MAX_NINES, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(MAX_NINES as usize + 1)
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|v| pct_label(*v))
        .y_label_formatter(&|v| label(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    draw_lines(&mut chart, lines, &[], (lo, hi), false)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.7))
        .border_style(RGBColor(150, 150, 150))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

/// Renders `f` as an SVG document.
pub fn render(f: &Figure) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let title_h = 16 + 24 * f.title.len().max(1) as u32;
        let (head, body) = root.split_vertically(title_h);
        for (i, line) in f.title.iter().enumerate() {
            let size = if i == 0 { 22 } else { 17 };
            head.draw(&Text::new(
                line.clone(),
                (16, 10 + 24 * i as i32),
                ("sans-serif", size).into_font().color(&BLACK),
            ))?;
        }
        let (top, bottom) = body.split_vertically(((H - title_h) as f64 * 0.5) as u32);
        let secs = f.secs.max(f.bucket_ms as f64 / 1e3).max(1e-3);
        let rmax = f.rates.iter().flat_map(Line::ys).fold(1.0f64, f64::max) * 1.08;
        time_panel(
            &top,
            &format!("throughput per {} ms bucket ({})", f.bucket_ms, f.rate_unit),
            secs,
            0f64..rmax,
            &f.rate_unit,
            (0.0, rmax),
            &f.rates,
            &f.markers,
            SeriesLabelPosition::UpperRight,
            true,
        )?;
        if f.latency_over_time.is_empty() {
            distribution_panel(&bottom, &f.latency_name, &f.distributions)?;
        } else {
            let (left, right) = bottom.split_horizontally(W / 2);
            let (lo, hi) = log_bounds(f.latency_over_time.iter().flat_map(Line::ys));
            time_panel(
                &left,
                "release latency per bucket (log scale)",
                secs,
                (lo..hi).log_scale(),
                "ms",
                (lo, hi),
                &f.latency_over_time,
                &f.markers,
                SeriesLabelPosition::UpperRight,
                false,
            )?;
            distribution_panel(&right, &f.latency_name, &f.distributions)?;
        }
        root.present()?;
    }
    Ok(out)
}

/// Throughput lines of a cluster-style series (`speculative`: draw speculative commits too).
fn series_rates(series: &[Bucket], bucket_ms: u64, speculative: bool) -> Vec<Line> {
    let w = bucket_ms as f64 / 1e3;
    let rate = |v: u64| v as f64 / w;
    let mid = |b: &Bucket| b.start_ms as f64 / 1e3 + w / 2.0;
    let line = |name: &str, color, f: &dyn Fn(&Bucket) -> u64| {
        Line::new(
            name,
            color,
            series.iter().map(|b| (mid(b), rate(f(b)))).collect(),
        )
    };
    let mut v = vec![Line {
        width: 3,
        ..line("released/s", colors::RELEASED, &|b| b.released)
    }];
    if speculative {
        v.push(line("speculative/s", colors::SPECULATIVE, &|b| b.spec));
    }
    v.push(line("aborted+unknown/s", colors::ABORTED, &|b| {
        b.aborted() + b.unknown
    }));
    v
}

/// Release latency p50 and p99 per bucket (ms; gaps where nothing was released).
fn series_latency(series: &[Bucket], bucket_ms: u64) -> Vec<Line> {
    let w = bucket_ms as f64 / 1e3;
    let line = |name: &str, color, f: &dyn Fn(&Bucket) -> Option<f64>| Line {
        name: name.to_owned(),
        color,
        width: 2,
        points: series
            .iter()
            .map(|b| (b.start_ms as f64 / 1e3 + w / 2.0, f(b).map(|us| us / 1e3)))
            .collect(),
    };
    vec![
        line("p50", colors::P50, &|b| b.p50_us),
        line("p99", colors::P99, &|b| b.p99_us),
    ]
}

/// The figure of a cluster run (`mako bench --shards/--replicas`, `mako demo`): released,
/// speculative and aborted per bucket, release latency p50/p99 per bucket, the commit and
/// release latency distributions, and the leader crash with the first release after it.
pub fn cluster_figure(r: &ClusterReport, command: &str) -> Figure {
    let mut markers = Vec::new();
    if let Some(f) = &r.failover {
        let at = f.at_ms / 1e3;
        markers.push(Marker {
            at_s: at,
            label: format!("leader of shard {} crashed ({at:.2} s)", f.shard),
            color: colors::CRASH,
        });
        if let Some(ms) = f.first_release_ms {
            markers.push(Marker {
                at_s: at + ms / 1e3,
                label: format!("first release after the crash: +{ms:.0} ms"),
                color: colors::RECOVERED,
            });
        }
    }
    Figure {
        title: vec![
            format!(
                "{command}: {} shard(s) x {} replicas, {}, durability {}, {} worker(s)/shard, window {}",
                r.shards,
                r.replicas,
                r.protocol,
                r.durability,
                r.threads,
                if r.window == 0 {
                    "unbounded".to_owned()
                } else {
                    r.window.to_string()
                }
            ),
            format!(
                "micro workload, {}% read-only, cross-shard {:.1}% of commits; released {:.0} txn/s, release p50 {:.0} us p99 {:.0} us; election timeout {}-{} ms",
                r.read_pct,
                r.distributed_pct,
                r.released_per_sec,
                r.release_p50_us,
                r.release_p99_us,
                r.election_ms.0,
                r.election_ms.1
            ),
        ],
        bucket_ms: r.bucket_ms,
        secs: r.series.len() as f64 * r.bucket_ms as f64 / 1e3,
        rate_unit: "txn/s".to_owned(),
        rates: series_rates(&r.series, r.bucket_ms, true),
        latency_over_time: series_latency(&r.series, r.bucket_ms),
        latency_name: "commit and release latency".to_owned(),
        distributions: vec![
            Line::distribution(
                "commit (begin to speculative commit)",
                colors::COMMIT,
                &r.commit_latency,
            ),
            Line {
                width: 3,
                ..Line::distribution(
                    "release (begin to release)",
                    colors::RELEASE,
                    &r.release_latency,
                )
            },
        ],
        markers,
    }
}

/// A cluster run's picture as SVG, titled as `mako bench`.
pub fn svg(r: &ClusterReport) -> Result<String, PlotError> {
    render(&cluster_figure(r, "mako bench"))
}

/// The figure of a remote run (`mako bench -f`): released and aborted per bucket, release
/// latency p50/p99 per bucket and its distribution (client-observed).
pub(crate) fn remote_figure(r: &crate::remote::RemoteBenchReport) -> Figure {
    Figure {
        title: vec![
            format!(
                "mako bench -f {}: {} shard(s) x {} replicas, {}, durability {}, {} client thread(s)",
                r.config.join(" -f "),
                r.shards,
                r.replicas,
                r.protocol,
                r.durability,
                r.clients
            ),
            format!(
                "{} workload, {}% read-only, cross-shard {:.1}% of released; released {:.0} txn/s, release p50 {:.0} us p99 {:.0} us (client-observed)",
                r.workload.name(),
                r.read_pct,
                r.cross_shard_pct,
                r.released_per_sec,
                r.release_p50_us,
                r.release_p99_us
            ),
        ],
        bucket_ms: r.bucket_ms,
        secs: r.series.len() as f64 * r.bucket_ms as f64 / 1e3,
        rate_unit: "txn/s".to_owned(),
        rates: series_rates(&r.series, r.bucket_ms, false),
        latency_over_time: series_latency(&r.series, r.bucket_ms),
        latency_name: "release latency (client-observed)".to_owned(),
        distributions: vec![Line {
            width: 3,
            ..Line::distribution("release", colors::RELEASE, &r.release_latency)
        }],
        markers: Vec::new(),
    }
}

/// The figure of a replication group run (`mako bench group` / `raft`): committed entries
/// per bucket and the submit-to-commit latency distribution.
pub fn group_figure(r: &GroupBenchReport) -> Figure {
    let w = r.bucket_ms as f64 / 1e3;
    Figure {
        title: vec![
            format!(
                "mako bench group: {}, {} group(s) x 3 replicas, {} B entries, durability {}, {} transport",
                r.protocol,
                r.groups,
                r.entry_bytes,
                r.durability,
                r.net.name()
            ),
            format!(
                "{}; committed {:.0} entries/s ({:.1} MB/s), commit p50 {:.0} us p99 {:.0} us p99.9 {:.0} us, leader changes {}",
                if r.target_rate > 0.0 {
                    format!("paced at {:.0} entries/s", r.target_rate)
                } else {
                    "unthrottled".to_owned()
                },
                r.entries_per_sec,
                r.mb_per_sec,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.leader_changes
            ),
        ],
        bucket_ms: r.bucket_ms,
        secs: r.committed_per_bucket.len() as f64 * w,
        rate_unit: "entries/s".to_owned(),
        rates: vec![Line {
            width: 3,
            ..Line::new(
                "committed entries/s",
                colors::RELEASED,
                r.committed_per_bucket
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| ((i as f64 + 0.5) * w, n as f64 / w))
                    .collect(),
            )
        }],
        latency_over_time: Vec::new(),
        latency_name: "commit latency (submit to leader apply)".to_owned(),
        distributions: vec![Line {
            width: 3,
            ..Line::distribution("commit", colors::COMMIT, &r.commit_latency)
        }],
        markers: Vec::new(),
    }
}

/// A group run's picture as SVG.
pub fn group_svg(r: &GroupBenchReport) -> Result<String, PlotError> {
    render(&group_figure(r))
}

/// Checks that `svg` is well-formed XML as far as tags go: every element closed in order,
/// attribute values quoted, no stray `<` or `&` in text. Returns the elements by name.
pub fn well_formed(svg: &str) -> Result<std::collections::BTreeMap<String, usize>, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    let mut rest = svg.trim_start();
    if rest.starts_with("<?xml") {
        let end = rest.find("?>").ok_or("unterminated declaration")?;
        rest = &rest[end + 2..];
    }
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        check_text(text)?;
        if !stack.is_empty() || text.trim().is_empty() {
        } else {
            return Err(format!("text outside the root: {text:?}"));
        }
        rest = &rest[lt + 1..];
        // The tag runs to the first `>` outside quotes.
        let mut quote = None;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                (None, '<') => return Err("'<' inside a tag".into()),
                _ => {}
            }
        }
        let end = end.ok_or("unterminated tag")?;
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name: String = tag.chars().take_while(|c| !c.is_whitespace()).collect();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("bad element name in <{tag}>"));
        }
        if stack.is_empty() && seen.contains_key("svg") {
            return Err(format!("second root <{name}>"));
        }
        // Attributes: name="value" pairs.
        let mut attrs = tag[name.len()..].trim();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or(format!("attribute without value in <{tag}>"))?;
            let q = attrs[eq + 1..].chars().next().ok_or("missing quote")?;
            if q != '"' && q != '\'' {
                return Err(format!("unquoted attribute in <{tag}>"));
            }
            let close = attrs[eq + 2..].find(q).ok_or("unterminated attribute")?;
            check_text(&attrs[eq + 2..eq + 2 + close])?;
            attrs = attrs[eq + 2 + close + 1..].trim_start();
        }
        *seen.entry(name.clone()).or_insert(0) += 1;
        if !self_closing {
            stack.push(name);
        }
    }
    check_text(rest)?;
    if !rest.trim().is_empty() {
        return Err(format!("text after the root: {rest:?}"));
    }
    match stack.is_empty() {
        true if seen.contains_key("svg") => Ok(seen),
        true => Err("no <svg> root".into()),
        false => Err(format!("unclosed elements {stack:?}")),
    }
}

/// Text or an attribute value: `&` only as an entity.
fn check_text(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find('&') {
        rest = &rest[i + 1..];
        let semi = rest.find(';').ok_or(format!("bare '&' in {t:?}"))?;
        let ent = &rest[..semi];
        let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
            || ent.strip_prefix('#').is_some_and(|n| {
                n.parse::<u32>().is_ok()
                    || n.strip_prefix('x')
                        .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
            });
        if !ok {
            return Err(format!("bad entity &{ent}; in {t:?}"));
        }
    }
    Ok(())
}

/// The polylines of `svg` stroked in `rgb` (hex as the plotting crate writes it, e.g.
/// `08519C`), as their points; for checking a rendered picture.
pub fn polylines(svg: &str, rgb: &str) -> Vec<Vec<(f64, f64)>> {
    let stroke = format!("stroke=\"#{rgb}\"");
    svg.split("<polyline")
        .skip(1)
        .map(|p| &p[..p.find("/>").unwrap_or(p.len())])
        .filter(|p| p.contains(&stroke))
        .map(|p| {
            let pts = p.split("points=\"").nth(1).unwrap_or("");
            pts[..pts.find('"').unwrap_or(0)]
                .split_whitespace()
                .filter_map(|xy| {
                    let (x, y) = xy.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FailoverReport;
    use crate::series::{Dip, latency_curve};

    /// The polylines drawn in `color`, as their points.
    fn polylines(svg: &str, color: (u8, u8, u8)) -> Vec<Vec<(f64, f64)>> {
        super::polylines(
            svg,
            &format!("{:02X}{:02X}{:02X}", color.0, color.1, color.2),
        )
    }

    /// The data lines drawn in `color` (legend samples and dashes have 2 points), as their
    /// point counts.
    fn lines(svg: &str, color: (u8, u8, u8)) -> Vec<usize> {
        polylines(svg, color)
            .into_iter()
            .map(|l| l.len())
            .filter(|&n| n > 2)
            .collect()
    }

    fn curve(scale_us: u64) -> Vec<Quantile> {
        let mut h = crate::driver::new_histogram();
        for i in 1..=10_000u64 {
            h.record(i * scale_us * 100).unwrap();
        }
        latency_curve(&h, 0.001)
    }

    fn cluster_report() -> ClusterReport {
        let series: Vec<Bucket> = (0..30)
            .map(|i| Bucket {
                start_ms: i * 100,
                spec: 500 + i,
                released: if (12..16).contains(&i) { 0 } else { 480 + i },
                unknown: u64::from(i == 13),
                p50_us: (!(12..16).contains(&i)).then_some(900.0 + i as f64),
                p99_us: (!(12..16).contains(&i)).then_some(4000.0 + i as f64),
                ..Bucket::default()
            })
            .collect();
        ClusterReport {
            shards: 2,
            replicas: 3,
            threads: 4,
            window: 32,
            max_unreleased: 32,
            read_pct: 80,
            cross_shard_pct: None,
            durability: "fsync".into(),
            protocol: "paxos".into(),
            election_ms: (400, 700),
            request_timeout_ms: 1000,
            unknown_after_ms: 2000,
            secs: 3.0,
            load_secs: 0.1,
            spec_per_sec: 5000.0,
            released_per_sec: 4900.0,
            wall_secs: 3.0,
            cpu_secs: 5.5,
            released_per_cpu_sec: 4900.0 * 3.0 / 5.5,
            abort_pct: 0.5,
            aborts: Default::default(),
            unknown: 1,
            unknown_later_released: 0,
            unknown_later_discarded: 0,
            unknown_samples: Vec::new(),
            distributed_pct: 73.4,
            commit_p50_us: 100.0,
            release_p50_us: 900.0,
            release_p99_us: 4000.0,
            release_p999_us: 9000.0,
            commit_latency: curve(1),
            release_latency: curve(10),
            replay_lag_p99_us: 10.0,
            unreleased_at_end: 0,
            consistent: true,
            difference: None,
            bucket_ms: 100,
            series,
            failover: Some(FailoverReport {
                shard: 0,
                replica: 1,
                at_ms: 1200.0,
                stop_ms: 1.0,
                new_leader: Some(2),
                serving_after_ms: Some(450.0),
                first_release_ms: Some(420.0),
                first_cross_release_ms: Some(430.0),
                first_any_release_ms: Some(20.0),
                released_after_by_home: vec![10, 10],
                dip: Dip::default(),
            }),
            kill_error: None,
        }
    }

    #[test]
    fn cluster_picture_is_well_formed_titled_and_draws_both_panels() {
        let r = cluster_report();
        let svg = svg(&r).unwrap();
        let elements = well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(elements["polyline"] >= 8, "{elements:?}");
        assert!(svg.starts_with("<svg"));
        // The run's parameters in the title.
        for p in [
            "2 shard(s) x 3 replicas",
            "paxos",
            "durability fsync",
            "4 worker(s)/shard",
            "80% read-only",
            "cross-shard 73.4%",
        ] {
            assert!(svg.contains(p), "title lacks {p:?}");
        }
        // Throughput panel: released, speculative and aborted, one point per bucket.
        assert_eq!(lines(&svg, colors::SPECULATIVE), vec![30]);
        assert_eq!(lines(&svg, colors::ABORTED), vec![30]);
        // Released per bucket, and the release latency distribution, share a color.
        let blue = lines(&svg, colors::RELEASED);
        assert!(blue.contains(&30) && blue.contains(&41), "{blue:?}");
        // Latency over time: p50 and p99 split at the buckets without releases.
        assert_eq!(lines(&svg, colors::P50), vec![12, 14]);
        assert_eq!(lines(&svg, colors::P99), vec![12, 14]);
        // Distribution panel: the commit curve, p0 to p99.99.
        assert_eq!(lines(&svg, colors::COMMIT), vec![41]);
        for label in [
            "released/s",
            "speculative/s",
            "commit (begin to speculative commit)",
            "release (begin to release)",
            "distribution (log scale)",
            "99.99",
            "leader of shard 0 crashed (1.20 s)",
            "first release after the crash: +420 ms",
        ] {
            assert!(svg.contains(label), "missing {label:?}");
        }
        // The crash marker is a vertical dashed line on both time panels.
        let mut xs: Vec<f64> = polylines(&svg, colors::CRASH)
            .into_iter()
            .filter(|l| l.len() == 2 && l[0].0 == l[1].0)
            .map(|l| l[0].0)
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        assert_eq!(xs.len(), 2, "{xs:?}");
    }

    #[test]
    fn group_picture_draws_entries_per_second_and_commit_latency() {
        let r = GroupBenchReport {
            protocol: "raft",
            net: crate::NetKind::Tcp,
            entry_bytes: 4096,
            groups: 6,
            durability: "fsync",
            target_rate: 0.0,
            entries_per_sec: 12_000.0,
            mb_per_sec: 49.2,
            p50_us: 800.0,
            p99_us: 3000.0,
            p999_us: 5000.0,
            gaps: 0,
            duplicates: 0,
            reordered: 0,
            syncs_per_sec: 300.0,
            log_writes_per_sec: 300.0,
            entries_per_log_write: 40.0,
            leader_changes: 0,
            commit_latency: curve(2),
            bucket_ms: 100,
            committed_per_bucket: (0..20).map(|i| 1200 + i).collect(),
        };
        let svg = group_svg(&r).unwrap();
        well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        for p in [
            "mako bench group: raft",
            "6 group(s) x 3 replicas",
            "4096 B entries",
            "durability fsync",
            "tcp transport",
            "committed entries/s",
            "commit latency (submit to leader apply)",
        ] {
            assert!(svg.contains(p), "missing {p:?}");
        }
        assert_eq!(lines(&svg, colors::RELEASED), vec![20]);
        assert_eq!(lines(&svg, colors::COMMIT), vec![41]);
        // No per-bucket latency panel in a group picture.
        assert!(!svg.contains("release latency per bucket"));
    }

    #[test]
    fn an_empty_run_still_draws() {
        let mut r = cluster_report();
        r.series.clear();
        r.commit_latency.clear();
        r.release_latency.clear();
        r.failover = None;
        well_formed(&svg(&r).unwrap()).unwrap();
    }

    #[test]
    fn the_xml_check_catches_broken_documents() {
        assert!(well_formed("<svg><g></g></svg>").is_ok());
        assert!(well_formed("<svg><g></svg>").is_err());
        assert!(well_formed("<svg><g/></g></svg>").is_err());
        assert!(well_formed("<svg><text>a < b</text></svg>").is_err());
        assert!(well_formed("<svg><text>a & b</text></svg>").is_err());
        assert!(well_formed("<svg><rect x=1/></svg>").is_err());
        assert!(well_formed("<svg></svg><svg></svg>").is_err());
        assert!(well_formed("<svg>").is_err());
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(label(50_000.0), "50k");
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(0.30000000000000004), "0.3");
        assert_eq!(label(1234.0), "1.23k");
        assert_eq!(label(0.0), "0");
        assert_eq!(label(2_500_000.0), "2.5M");
        assert_eq!(pct_label(0.0), "0");
        assert_eq!(pct_label(nines_of_pct(50.0)), "50");
        assert_eq!(pct_label(3.0), "99.9");
        assert_eq!(pct_label(4.0), "99.99");
        assert_eq!(log_bounds([0.15, 42.0].into_iter()), (0.1, 100.0));
        assert_eq!(log_bounds(std::iter::empty()), (0.01, 10.0));
    }
}
