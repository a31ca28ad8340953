//! The SVG plots of a benchmark sweep: what each consistency level costs in latency and
//! throughput, and how soon an acknowledged write becomes visible elsewhere.
//!
//! Drawn with plotters' SVG backend and without its `ttf` feature: the backend writes
//! `<text>` elements and leaves the font to the viewer, and plotters only estimates text
//! sizes for layout, so no font library and no font file is needed.
//!
//! Every chart keeps its legend in a panel to the right of the plot, so a legend never covers
//! data however many series there are. Log axes are drawn as linear axes over `log10` of the
//! values, with ticks chosen here (1-2-5 per decade), so that every chart has one coordinate
//! type and short ranges still get labels.

use super::results::{Row, Visibility};
use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::Path;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;
/// Latencies and rates are clamped to this before taking logs: a log axis has no zero.
const LOG_FLOOR: f64 = 0.01;
const FONT: &str = "sans-serif";
/// Font sizes as plotters counts them; the SVG gets `size / 1.24` px.
const TITLE_SIZE: u32 = 24;
const DESC_SIZE: u32 = 19;
const LABEL_SIZE: u32 = 17;
const LEGEND_SIZE: u32 = 16;

/// Strong series in warm colours, eventual ones in cool colours, so the two modes separate
/// at a glance; within a family the colours are as far apart as the family allows.
const WARM: [RGBColor; 6] = [
    RGBColor(200, 30, 30),  // red
    RGBColor(240, 130, 0),  // orange
    RGBColor(140, 70, 20),  // brown
    RGBColor(215, 60, 150), // pink
    RGBColor(200, 165, 0),  // mustard
    RGBColor(110, 20, 40),  // maroon
];
const COOL: [RGBColor; 7] = [
    RGBColor(30, 100, 200), // blue
    RGBColor(0, 160, 80),   // green
    RGBColor(110, 60, 170), // purple
    RGBColor(0, 170, 190),  // cyan
    RGBColor(20, 40, 110),  // navy
    RGBColor(0, 115, 120),  // teal
    RGBColor(120, 170, 30), // lime
];
const GRID: RGBColor = RGBColor(205, 205, 205);
const MINOR_GRID: RGBColor = RGBColor(236, 236, 236);

/// How a series is named in legends: mode, the operation in the database's words, and the
/// level (left out for strong writes, whose only level is `majority`).
pub(crate) fn series_label(row: &Row) -> String {
    let op = operation_word(&row.op.operation);
    if row.op.level.is_empty() || row.op.level == "majority" {
        format!("{} {op}", row.mode)
    } else {
        format!("{} {op} {}", row.mode, row.op.level)
    }
}

/// YCSB's operation names as capdial calls them.
fn operation_word(operation: &str) -> &str {
    match operation {
        "update" | "insert" => "put",
        "read" => "get",
        "rmw" => "read-modify-write",
        other => other,
    }
}

/// Latency at p50, p90, p99 and p99.9, one line per series, at one delay and concurrency.
pub(crate) fn latency_percentiles(
    rows: &[Row],
    delay_ms: u64,
    concurrency: u32,
    path: &Path,
) -> Result<()> {
    let chosen = measured(rows, |r| {
        r.delay_ms == delay_ms && r.concurrency == concurrency
    });
    let names = ["p50", "p90", "p99", "p99.9"].map(String::from).to_vec();
    let lines: Vec<Line> = catalogue(rows)
        .into_iter()
        .filter_map(|(label, color)| {
            let row = pick(&chosen, &label, |_| true)?;
            let l = &row.op.latency_ms;
            let points = [l.p50, l.p90, l.p99, l.p999]
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as f64, v))
                .collect();
            Some(Line::new(label, color, Dash::Solid, Marker::Circle, points))
        })
        .collect();
    let title = format!(
        "Latency percentiles per level — {}, {}",
        in_flight(concurrency),
        between_nodes(delay_ms)
    );
    let x = Axis::category("percentile", names);
    let y = Axis::log("latency (ms, log scale)", values(&lines));
    render(path, &title, &x, &y, &lines)
}

/// Throughput against concurrency, one line per series, at one delay.
pub(crate) fn throughput(rows: &[Row], delay_ms: u64, path: &Path) -> Result<()> {
    let chosen = measured(rows, |r| {
        r.delay_ms == delay_ms && r.op.throughput > 0.0 && r.op.throughput.is_finite()
    });
    let levels = distinct(&chosen, |r| u64::from(r.concurrency));
    let lines: Vec<Line> = per_category(rows, &chosen, &levels, |r| u64::from(r.concurrency))
        .into_iter()
        .map(|s| {
            let points = s.points(|r| r.op.throughput);
            Line::new(s.label, s.color, Dash::Solid, Marker::Circle, points)
        })
        .collect();
    let title = format!("Throughput per level — {}", between_nodes(delay_ms));
    let names = levels.iter().map(u64::to_string).collect();
    let x = Axis::category("requests in flight", names);
    let y = Axis::log("throughput (ops/s, log scale)", values(&lines));
    render(path, &title, &x, &y, &lines)
}

/// What each consistency level costs: p50 (solid, circles) and p99 (dashed, triangles)
/// latency against the delay between nodes, at one concurrency.
pub(crate) fn price_of_consistency(rows: &[Row], concurrency: u32, path: &Path) -> Result<()> {
    let chosen = measured(rows, |r| r.concurrency == concurrency);
    let delays = distinct(&chosen, |r| r.delay_ms);
    // Each series' p99 right after its p50, so the legend reads in pairs.
    let lines: Vec<Line> = per_category(rows, &chosen, &delays, |r| r.delay_ms)
        .into_iter()
        .flat_map(|s| {
            let p50 = s.points(|r| r.op.latency_ms.p50);
            let p99 = s.points(|r| r.op.latency_ms.p99);
            let (label, color) = (&s.label, s.color);
            [
                Line::new(
                    format!("{label} p50"),
                    color,
                    Dash::Solid,
                    Marker::Circle,
                    p50,
                ),
                Line::new(
                    format!("{label} p99"),
                    color,
                    Dash::Long,
                    Marker::Triangle,
                    p99,
                ),
            ]
        })
        .collect();
    let title = format!(
        "The price of consistency — latency vs. delay between nodes, {}",
        in_flight(concurrency)
    );
    let names = delays.iter().map(u64::to_string).collect();
    let x = Axis::category("one-way delay between nodes (ms)", names);
    let y = Axis::log("latency (ms, log scale)", values(&lines));
    render(path, &title, &x, &y, &lines)
}

/// t-visibility: the chance that a read on another node sees an acknowledged write, against
/// the time since the acknowledgement; one line per level and delay.
pub(crate) fn visibility(points: &[Visibility], path: &Path) -> Result<()> {
    // A probe offset that no probe reached has no probability to speak of.
    let usable: Vec<&Visibility> = points
        .iter()
        .filter(|p| p.probes > 0 && p.offset_ms.is_finite() && p.probability.is_finite())
        .collect();
    let lines = visibility_lines(&usable);
    let offsets = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let x = Axis::linear("time after the write was acknowledged (ms)", offsets);
    let y = Axis::fixed(
        "probability a read sees the write",
        -0.03..1.05,
        vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    );
    let title = "t-visibility — how soon a read on another node sees an acknowledged write";
    render(path, title, &x, &y, &lines)
}

/// One line per (mode, level, delay): the colour tells the level, the dash tells the delay.
fn visibility_lines(points: &[&Visibility]) -> Vec<Line> {
    let mut keys: Vec<(usize, usize, &str, &str, u64)> = points
        .iter()
        .map(|p| {
            (
                mode_rank(&p.mode),
                level_rank(&p.level),
                p.mode.as_str(),
                p.level.as_str(),
                p.delay_ms,
            )
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let levels: Vec<(&str, &str)> = dedup_in_order(keys.iter().map(|k| (k.2, k.3)));
    let colors: Vec<((&str, &str), RGBColor)> = levels
        .iter()
        .copied()
        .zip(family_colors(levels.iter().map(|l| l.0)))
        .collect();
    let mut delays: Vec<u64> = keys.iter().map(|k| k.4).collect();
    delays.sort_unstable();
    delays.dedup();
    keys.iter()
        .map(|&(_, _, mode, level, delay)| {
            let mut line: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.mode == mode && p.level == level && p.delay_ms == delay)
                .map(|p| (p.offset_ms, p.probability))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = colors
                .iter()
                .find(|(l, _)| *l == (mode, level))
                .map_or(COOL[0], |(_, c)| *c);
            let dash = Dash::nth(delays.iter().position(|d| *d == delay).unwrap_or(0));
            let label = format!("{mode} {level}, {delay} ms");
            Line::new(label, color, dash, Marker::Circle, line)
        })
        .collect()
}

// ---- Which rows and series -----------------------------------------------------------------

/// The rows that pass `keep` and measured something: with no successful operation the
/// latencies of a row are zeros, not measurements.
fn measured(rows: &[Row], keep: impl Fn(&Row) -> bool) -> Vec<&Row> {
    rows.iter().filter(|r| r.op.ok > 0 && keep(r)).collect()
}

/// The series of a sweep in legend order, each with its colour. Built from all rows rather
/// than from one chart's selection, so that a series keeps its colour across the charts of
/// one sweep.
fn catalogue(rows: &[Row]) -> Vec<(String, RGBColor)> {
    let mut keys: Vec<(usize, usize, usize, String, &str)> = rows
        .iter()
        .map(|r| {
            let op = operation_rank(&r.op.operation);
            let level = level_rank(&r.op.level);
            (
                mode_rank(&r.mode),
                op,
                level,
                series_label(r),
                r.mode.as_str(),
            )
        })
        .collect();
    // Rows of one series (update and insert are both "put") sort next to each other.
    keys.sort_unstable();
    keys.dedup_by(|a, b| a.3 == b.3);
    let colors = family_colors(keys.iter().map(|k| k.4));
    keys.into_iter().map(|k| k.3).zip(colors).collect()
}

/// The row of one series among `rows` that passes `at`. If update and insert rows both are
/// there ("put"), the one with more successful operations speaks for the series.
fn pick<'a>(rows: &[&'a Row], label: &str, at: impl Fn(&Row) -> bool) -> Option<&'a Row> {
    rows.iter()
        .copied()
        .filter(|r| at(r) && series_label(r) == label)
        .max_by_key(|r| r.op.ok)
}

/// The distinct values of `key` among `rows`, ascending: the categories of an x axis.
fn distinct(rows: &[&Row], key: impl Fn(&Row) -> u64) -> Vec<u64> {
    let mut values: Vec<u64> = rows.iter().map(|r| key(r)).collect();
    values.sort_unstable();
    values.dedup();
    values
}

/// One series of a chart with a categorical x axis: its row at each category it has one for.
struct SeriesRows<'a> {
    label: String,
    color: RGBColor,
    /// (category index, row)
    rows: Vec<(usize, &'a Row)>,
}

impl SeriesRows<'_> {
    /// One point per category: x is the category's index.
    fn points(&self, value: impl Fn(&Row) -> f64) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .map(|(i, r)| (*i as f64, value(r)))
            .collect()
    }
}

/// Every series that has a row among `chosen` at one of `categories` at least (by `key`).
fn per_category<'a>(
    all: &[Row],
    chosen: &[&'a Row],
    categories: &[u64],
    key: impl Fn(&Row) -> u64,
) -> Vec<SeriesRows<'a>> {
    catalogue(all)
        .into_iter()
        .map(|(label, color)| {
            let rows = categories
                .iter()
                .enumerate()
                .filter_map(|(i, c)| Some((i, pick(chosen, &label, |r| key(r) == *c)?)))
                .collect();
            SeriesRows { label, color, rows }
        })
        .filter(|s| !s.rows.is_empty())
        .collect()
}

fn mode_rank(mode: &str) -> usize {
    rank(&["strong", "paxos", "eventual"], mode)
}

/// By the word a label uses, so that update and insert rank alike.
fn operation_rank(operation: &str) -> usize {
    let order = ["put", "get", "scan", "read-modify-write"];
    rank(&order, operation_word(operation))
}

/// Levels from strongest to weakest within each mode, as the dial reads.
fn level_rank(level: &str) -> usize {
    let order = [
        "majority",
        "linearizable",
        "lease",
        "follower",
        "stale",
        "all",
        "quorum",
        "session",
        "local",
    ];
    rank(&order, level)
}

/// The position of `name` in `order`, unknown names last (then by name, in the caller's sort).
fn rank(order: &[&str], name: &str) -> usize {
    order.iter().position(|o| *o == name).unwrap_or(order.len())
}

/// A colour per entry: warm for strong, cool for anything else, in order within each family
/// (and round again when a family runs out).
fn family_colors<'a>(modes: impl Iterator<Item = &'a str>) -> Vec<RGBColor> {
    let (mut warm, mut cool) = (0, 0);
    modes
        .map(|mode| {
            // Both linearizable modes warm: the dial reads strong to weak.
            if mode == "strong" || mode == "paxos" {
                warm += 1;
                WARM[(warm - 1) % WARM.len()]
            } else {
                cool += 1;
                COOL[(cool - 1) % COOL.len()]
            }
        })
        .collect()
}

fn dedup_in_order<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn values(lines: &[Line]) -> impl Iterator<Item = f64> + '_ {
    lines.iter().flat_map(|l| l.points.iter().map(|p| p.1))
}

fn in_flight(concurrency: u32) -> String {
    format!("{concurrency} in flight")
}

fn between_nodes(delay_ms: u64) -> String {
    if delay_ms == 0 {
        "no delay added between nodes".to_string()
    } else {
        format!("{delay_ms} ms between nodes")
    }
}

// ---- Lines and axes ------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dash {
    Solid,
    Long,
    Short,
}

impl Dash {
    /// The n-th style, for telling apart lines that share a colour.
    fn nth(n: usize) -> Dash {
        [Dash::Solid, Dash::Long, Dash::Short][n % 3]
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Marker {
    Circle,
    Triangle,
}

/// One line of a chart, in data coordinates (x is a category index on categorical axes).
struct Line {
    label: String,
    color: RGBColor,
    dash: Dash,
    marker: Marker,
    points: Vec<(f64, f64)>,
}

impl Line {
    fn new(
        label: String,
        color: RGBColor,
        dash: Dash,
        marker: Marker,
        points: Vec<(f64, f64)>,
    ) -> Line {
        Line {
            label,
            color,
            dash,
            marker,
            points,
        }
    }
}

enum Scale {
    Linear,
    /// Plotted as `log10` of the value.
    Log,
    Category(Vec<String>),
}

/// An axis in plot coordinates: its range, where its labelled ticks and light grid lines go,
/// and how a tick is written.
struct Axis {
    desc: String,
    scale: Scale,
    range: Range<f64>,
    ticks: Vec<f64>,
    minor: Vec<f64>,
}

impl Axis {
    /// Evenly spaced categories at 0, 1, ... with half a step of room on each side.
    fn category(desc: &str, names: Vec<String>) -> Axis {
        let n = names.len().max(1) as f64;
        Axis {
            desc: desc.to_string(),
            ticks: (0..names.len()).map(|i| i as f64).collect(),
            scale: Scale::Category(names),
            range: -0.5..n - 0.5,
            minor: Vec::new(),
        }
    }

    fn fixed(desc: &str, range: Range<f64>, ticks: Vec<f64>) -> Axis {
        let minor = Vec::new();
        Axis {
            desc: desc.to_string(),
            scale: Scale::Linear,
            range,
            ticks,
            minor,
        }
    }

    /// A linear axis from 0 (or below, for negative values) to the largest value.
    fn linear(desc: &str, values: impl Iterator<Item = f64>) -> Axis {
        let (lo, hi) = bounds(values.filter(|v| v.is_finite())).unwrap_or((0.0, 1.0));
        let lo = lo.min(0.0);
        // All offsets at 0: still a span to draw ticks over.
        let hi = if hi - lo < 1e-9 { lo + 1.0 } else { hi };
        let step = nice_step((hi - lo) / 8.0);
        let ticks = multiples(step, lo, hi);
        let pad = (hi - lo) * 0.03;
        Axis::fixed(desc, lo - pad..hi + pad, ticks)
    }

    /// A log axis over the values, each clamped to [`LOG_FLOOR`], padded a little beyond them.
    fn log(desc: &str, values: impl Iterator<Item = f64>) -> Axis {
        let clamped = values.filter(|v| v.is_finite()).map(|v| v.max(LOG_FLOOR));
        let (lo, hi) = bounds(clamped).unwrap_or((0.1, 10.0));
        let (lo, hi) = ((lo / 1.25).log10(), (hi * 1.25).log10());
        let (ticks, minor) = log_ticks(lo, hi);
        Axis {
            desc: desc.to_string(),
            scale: Scale::Log,
            range: lo..hi,
            ticks,
            minor,
        }
    }

    /// A data value in plot coordinates.
    fn place(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Log => v.max(LOG_FLOOR).log10(),
            _ => v,
        }
    }

    fn label(&self, v: f64) -> String {
        match &self.scale {
            Scale::Linear => number(v),
            Scale::Log => number(10f64.powf(v)),
            Scale::Category(names) => {
                let i = v.round();
                let name = (i >= 0.0).then(|| names.get(i as usize)).flatten();
                name.cloned().unwrap_or_default()
            }
        }
    }

    fn coord(&self) -> Ticked {
        Ticked {
            range: self.range.clone(),
            ticks: self.ticks.clone(),
            minor: self.minor.clone(),
        }
    }
}

/// A linear plotters coordinate with the ticks given. plotters' own `WithKeyPoints` does the
/// same but loses the label formatting its mesh needs; this one formats through the mesh's
/// label formatter like any `f64` axis.
#[derive(Clone)]
struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let fraction = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.5
        };
        let pixels = f64::from(limit.1) - f64::from(limit.0);
        // `as` saturates: a wild value lands off the plot, not in a panic.
        (f64::from(limit.0) + fraction * pixels).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Labelled ticks of a log axis spanning `lo..hi` (in log10): 1-2-5 per decade while that
/// stays readable, one per decade beyond, every 1..9 when the range is under a decade and
/// the others would leave it bare. The light lines are all the 1..9 not labelled.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let decades = hi - lo;
    let inside = |mults: &[f64]| -> Vec<f64> {
        let first = lo.floor() as i32;
        let last = hi.ceil() as i32;
        (first..=last)
            .flat_map(|d| mults.iter().map(move |m| (m * 10f64.powi(d)).log10()))
            .filter(|t| *t >= lo && *t <= hi)
            .collect()
    };
    let all: Vec<f64> = inside(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let mut ticks = if decades > 4.0 {
        inside(&[1.0])
    } else {
        inside(&[1.0, 2.0, 5.0])
    };
    if ticks.len() < 3 {
        ticks = all.clone();
    }
    let minor = all
        .into_iter()
        .filter(|m| !ticks.iter().any(|t| (t - m).abs() < 1e-9))
        .collect();
    (ticks, minor)
}

/// The 1-2-5 step nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| m * magnitude >= raw);
    step.unwrap_or(10.0) * magnitude
}

fn multiples(step: f64, lo: f64, hi: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick value in at most three significant digits, with `k` and `M` for large ones (ops/s).
fn number(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = if scaled == 0.0 {
        0
    } else {
        scaled.abs().log10().floor() as i32
    };
    let decimals = (2 - digits).clamp(0, 6) as usize;
    let text = format!("{scaled:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    let text = if text == "-0" { "0" } else { text };
    format!("{text}{suffix}")
}

// ---- Drawing -------------------------------------------------------------------------------

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Writes one chart: title across the top, plot on the left, legend panel on the right.
fn render(path: &Path, title: &str, x: &Axis, y: &Axis, lines: &[Line]) -> Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(title, (FONT, TITLE_SIZE))?;
    if lines.iter().all(|l| l.points.is_empty()) {
        no_data(&body)?;
    } else {
        let (plot, legend) = body.split_horizontally(WIDTH - legend_width(lines));
        draw_plot(&plot, x, y, lines)?;
        draw_legend(&legend, lines)?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}

fn no_data(area: &Area) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let style =
        TextStyle::from((FONT, DESC_SIZE).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    let text = Text::new(
        "no data: nothing was measured here",
        (w as i32 / 2, h as i32 / 2),
        style,
    );
    area.draw(&text)?;
    Ok(())
}

/// Space for the longest label plus the sample line; plotters' own estimate of text width
/// is too narrow for common sans-serif fonts, so this counts generously.
fn legend_width(lines: &[Line]) -> u32 {
    let longest = lines
        .iter()
        .map(|l| l.label.chars().count())
        .max()
        .unwrap_or(0) as u32;
    (longest * 8 + 64).clamp(150, 340)
}

fn draw_plot(area: &Area, x: &Axis, y: &Axis, lines: &[Line]) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(12)
        .margin_left(8)
        .margin_right(16)
        .margin_bottom(8)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(x.coord(), y.coord())?;
    chart
        .configure_mesh()
        .x_desc(x.desc.as_str())
        .y_desc(y.desc.as_str())
        .x_label_formatter(&|v| x.label(*v))
        .y_label_formatter(&|v| y.label(*v))
        .label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, DESC_SIZE))
        .bold_line_style(GRID)
        .light_line_style(MINOR_GRID)
        .draw()?;
    for line in lines {
        let points: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|&(px, py)| (x.place(px), y.place(py)))
            .filter(|(px, py)| px.is_finite() && py.is_finite())
            .collect();
        draw_line(&mut chart, line, &points)?;
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked, Ticked>>;

fn draw_line(chart: &mut Chart, line: &Line, points: &[(f64, f64)]) -> Result<()> {
    let style = line.color.stroke_width(2);
    let path = points.iter().copied();
    match dash_pattern(line.dash) {
        None => chart.draw_series(LineSeries::new(path, style)).map(drop),
        Some((on, off)) => chart
            .draw_series(DashedLineSeries::new(path, on, off, style))
            .map(drop),
    }?;
    let fill = line.color.filled();
    match line.marker {
        Marker::Circle => chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, fill)))
            .map(drop),
        Marker::Triangle => chart
            .draw_series(points.iter().map(|&p| TriangleMarker::new(p, 6, fill)))
            .map(drop),
    }?;
    Ok(())
}

/// Dash and gap lengths in pixels, or `None` for a solid line.
fn dash_pattern(dash: Dash) -> Option<(u32, u32)> {
    match dash {
        Dash::Solid => None,
        Dash::Long => Some((9, 5)),
        Dash::Short => Some((3, 4)),
    }
}

/// The legend panel: a framed list of sample line, marker and label per line, aligned with
/// the top of the plot, its rows squeezed when there are many lines (past some 50 the last
/// ones fall off the bottom).
fn draw_legend(area: &Area, lines: &[Line]) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let top = 14;
    let pitch = ((h as i32 - top - 70) / lines.len().max(1) as i32).clamp(8, 22);
    let bottom = top + pitch * lines.len() as i32 + 4;
    let frame = Rectangle::new(
        [(2, top - 4), (w as i32 - 10, bottom)],
        GRID.stroke_width(1),
    );
    area.draw(&frame)?;
    for (i, line) in lines.iter().enumerate() {
        let y = top + pitch * i as i32 + pitch / 2;
        legend_entry(area, line, y)?;
    }
    Ok(())
}

fn legend_entry(area: &Area, line: &Line, y: i32) -> Result<()> {
    let style = line.color.stroke_width(2);
    let sample = vec![(10, y), (40, y)];
    match dash_pattern(line.dash) {
        None => area.draw(&PathElement::new(sample, style)),
        Some((on, off)) => area.draw(&DashedPathElement::new(sample, on, off, style)),
    }?;
    let fill = line.color.filled();
    match line.marker {
        Marker::Circle => area.draw(&Circle::new((25, y), 4, fill)),
        Marker::Triangle => area.draw(&TriangleMarker::new((25, y), 6, fill)),
    }?;
    let font =
        TextStyle::from((FONT, LEGEND_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(line.label.as_str(), (48, y), font))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::results::{Latency, OpSummary};
    use super::*;

    fn row(
        mode: &str,
        operation: &str,
        level: &str,
        concurrency: u32,
        delay_ms: u64,
        p50: f64,
    ) -> Row {
        Row {
            mode: mode.to_string(),
            concurrency,
            delay_ms,
            op: OpSummary {
                operation: operation.to_string(),
                level: level.to_string(),
                ok: 100,
                throughput: f64::from(concurrency) * 1000.0 / p50,
                latency_ms: Latency {
                    p50,
                    p90: p50 * 1.5,
                    p99: p50 * 3.0,
                    p999: p50 * 5.0,
                    max: p50 * 8.0,
                    mean: p50,
                },
                ..OpSummary::default()
            },
        }
    }

    fn sweep() -> Vec<Row> {
        let mut rows = Vec::new();
        for concurrency in [1, 16] {
            for delay in [0, 5] {
                let d = delay as f64;
                rows.push(row(
                    "strong",
                    "update",
                    "majority",
                    concurrency,
                    delay,
                    1.3 + 2.0 * d,
                ));
                rows.push(row("strong", "read", "lease", concurrency, delay, 0.15));
                rows.push(row(
                    "eventual",
                    "update",
                    "quorum",
                    concurrency,
                    delay,
                    1.5 + 2.0 * d,
                ));
                rows.push(row("eventual", "read", "session", concurrency, delay, 0.2));
            }
        }
        rows
    }

    fn svg(path: &Path) -> String {
        std::fs::read_to_string(path).expect("the plot was written")
    }

    /// The contents of the `<text>` elements of an SVG, in document order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    fn has_text(svg: &str, wanted: &str) -> bool {
        texts(svg).iter().any(|t| t == wanted)
    }

    #[test]
    fn labels_name_mode_operation_and_level() {
        let label = |m, o, l| series_label(&row(m, o, l, 1, 0, 1.0));
        assert_eq!(label("strong", "update", "majority"), "strong put");
        assert_eq!(label("strong", "insert", "majority"), "strong put");
        assert_eq!(
            label("strong", "read", "linearizable"),
            "strong get linearizable"
        );
        assert_eq!(label("eventual", "update", "quorum"), "eventual put quorum");
        assert_eq!(label("eventual", "read", "session"), "eventual get session");
        assert_eq!(
            label("eventual", "rmw", "local"),
            "eventual read-modify-write local"
        );
        assert_eq!(label("strong", "scan", "stale"), "strong scan stale");
    }

    #[test]
    fn latency_percentiles_draws_every_series_of_the_point() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.svg");
        latency_percentiles(&sweep(), 5, 16, &path).expect("plotted");
        let text = svg(&path);
        assert!(text.contains("<svg"));
        for label in [
            "strong put",
            "strong get lease",
            "eventual put quorum",
            "eventual get session",
        ] {
            assert!(has_text(&text, label), "{label} missing");
        }
        assert!(text.contains("p99.9"));
        assert!(text.contains("16 in flight, 5 ms between nodes"));
    }

    #[test]
    fn throughput_has_one_category_per_concurrency() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("throughput.svg");
        throughput(&sweep(), 0, &path).expect("plotted");
        let text = svg(&path);
        assert!(text.contains("<svg") && has_text(&text, "eventual get session"));
        assert!(has_text(&text, "16") && text.contains("no delay added"));
    }

    #[test]
    fn price_of_consistency_pairs_p50_and_p99() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("price.svg");
        price_of_consistency(&sweep(), 1, &path).expect("plotted");
        let text = svg(&path);
        assert!(has_text(&text, "strong put p50") && has_text(&text, "strong put p99"));
        let texts = texts(&text);
        let at = |label: &str| texts.iter().position(|t| t == label);
        let p50 = at("eventual put quorum p50").expect("p50 entry");
        let p99 = at("eventual put quorum p99").expect("p99 entry");
        assert_eq!(p50 + 1, p99, "p99 follows its p50 in the legend");
    }

    #[test]
    fn rows_without_successes_are_not_plotted() {
        let mut rows = sweep();
        let mut failed = row("strong", "read", "follower", 1, 0, 0.0);
        failed.op.ok = 0;
        rows.push(failed);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.svg");
        latency_percentiles(&rows, 0, 1, &path).expect("plotted");
        assert!(!svg(&path).contains("follower"));
    }

    #[test]
    fn empty_and_single_point_inputs_still_write_a_chart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.svg");
        let plots: [&dyn Fn() -> Result<()>; 4] = [
            &|| latency_percentiles(&[], 0, 1, &empty),
            &|| price_of_consistency(&[], 1, &empty),
            &|| throughput(&[], 0, &empty),
            &|| visibility(&[], &empty),
        ];
        for plot in plots {
            let _ = std::fs::remove_file(&empty);
            plot().expect("plotted");
            assert!(svg(&empty).contains("no data"));
        }

        // A latency of zero (under the histogram's resolution) must not break the log axis.
        let mut one = row("strong", "read", "lease", 1, 0, 0.0);
        one.op.throughput = 500.0;
        let (price, rate) = (dir.path().join("price.svg"), dir.path().join("rate.svg"));
        price_of_consistency(std::slice::from_ref(&one), 1, &price).expect("plotted");
        throughput(&[one], 0, &rate).expect("plotted");
        assert!(has_text(&svg(&price), "strong get lease p50"));
        assert!(has_text(&svg(&rate), "strong get lease"));
    }

    #[test]
    fn visibility_draws_a_line_per_level_and_delay() {
        let point = |level: &str, delay_ms, offset_ms, probability| Visibility {
            mode: "eventual".to_string(),
            level: level.to_string(),
            delay_ms,
            offset_ms,
            probes: 10,
            fresh: (probability * 10.0) as u64,
            probability,
            errors: 0,
        };
        let points = vec![
            point("local", 20, 0.0, 0.1),
            point("local", 20, 50.0, 1.0),
            point("local", 0, 0.0, 0.8),
            point("quorum", 20, 0.0, 1.0),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("visibility.svg");
        visibility(&points, &path).expect("plotted");
        let text = svg(&path);
        for label in [
            "eventual local, 20 ms",
            "eventual local, 0 ms",
            "eventual quorum, 20 ms",
        ] {
            assert!(has_text(&text, label), "{label} missing");
        }
    }

    #[test]
    fn update_and_insert_are_one_put_series() {
        let mut rows = sweep();
        rows.push(row("eventual", "insert", "quorum", 1, 0, 2.0));
        rows.push(row("eventual", "insert", "local", 1, 0, 1.0));
        let labels: Vec<String> = catalogue(&rows).into_iter().map(|(l, _)| l).collect();
        let quorum = labels
            .iter()
            .filter(|l| *l == "eventual put quorum")
            .count();
        assert_eq!(quorum, 1, "{labels:?}");
        assert!(labels.contains(&"eventual put local".to_string()));
    }

    #[test]
    fn strong_is_warm_eventual_is_cool_and_all_differ() {
        let mut rows = Vec::new();
        for level in ["linearizable", "lease", "follower", "stale"] {
            rows.push(row("strong", "read", level, 1, 0, 1.0));
        }
        rows.push(row("strong", "update", "majority", 1, 0, 1.0));
        for level in ["local", "quorum", "all"] {
            rows.push(row("eventual", "update", level, 1, 0, 1.0));
        }
        for level in ["local", "session", "quorum"] {
            rows.push(row("eventual", "read", level, 1, 0, 1.0));
        }
        let series = catalogue(&rows);
        assert_eq!(series.len(), 11);
        assert_eq!(series[0].0, "strong put", "strong writes lead the legend");
        for (label, color) in &series {
            let family: &[RGBColor] = if label.starts_with("strong") {
                &WARM
            } else {
                &COOL
            };
            assert!(family.contains(color), "{label}");
        }
        let mut colors: Vec<_> = series.iter().map(|(_, c)| (c.0, c.1, c.2)).collect();
        colors.sort_unstable();
        colors.dedup();
        assert_eq!(colors.len(), 11);
    }

    #[test]
    fn a_linear_axis_over_one_value_still_has_ticks() {
        let axis = Axis::linear("ms", [0.0, 0.0].into_iter());
        assert!(axis.range.end > axis.range.start);
        assert!(axis.ticks.len() >= 2, "{:?}", axis.ticks);
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing").join("plot.svg");
        assert!(throughput(&sweep(), 0, &path).is_err());
    }

    #[test]
    fn log_ticks_label_short_and_long_ranges() {
        let short = Axis::log("ms", [0.3, 0.5].into_iter());
        assert!(short.ticks.len() >= 3, "{:?}", short.ticks);
        let long = Axis::log("ms", [0.0, 1e5].into_iter());
        let labels: Vec<String> = long.ticks.iter().map(|t| long.label(*t)).collect();
        assert_eq!(
            labels,
            ["0.01", "0.1", "1", "10", "100", "1000", "10k", "100k"]
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(150.0), "150");
        assert_eq!(number(20000.0), "20k");
        assert_eq!(number(0.2), "0.2");
    }
}
