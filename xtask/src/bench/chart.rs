//! The one SVG chart writer of the benchmarks: grouped bars (categories × series) or lines
//! (x, y points), with dashed reference lines (targets, baselines), axis labels, a legend and
//! a note. Every bench's `*.svg` in target/bench/ comes from here, so they look alike.

use std::fmt::Write as _;

/// Which axis a reference line crosses: `Y` draws a horizontal line at a y value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    X,
    Y,
}

enum Plot {
    Bars {
        groups: Vec<String>,
        series: Vec<Series<Vec<Option<f64>>>>,
    },
    Lines(Vec<Series<Vec<(f64, f64)>>>),
}

struct Series<T> {
    name: String,
    color: String,
    data: T,
}

struct Rule {
    axis: Axis,
    at: f64,
    label: String,
    color: String,
}

pub struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    note: String,
    width: f64,
    height: f64,
    plot: Plot,
    rules: Vec<Rule>,
    x_max: Option<f64>,
    y_max: Option<f64>,
    y_percent: bool,
}

// Layout, in pixels.
const LEFT: f64 = 80.0;
const LEGEND_W: f64 = 220.0;
const TOP: f64 = 50.0;
const LINE_H: f64 = 14.0;
/// Roughly the width of one character at the 11–12 px font sizes used.
const CHAR_W: f64 = 6.5;

impl Chart {
    fn new(title: &str, plot: Plot) -> Self {
        Self {
            title: title.to_string(),
            x_label: String::new(),
            y_label: String::new(),
            note: String::new(),
            width: 760.0,
            height: 400.0,
            plot,
            rules: Vec::new(),
            x_max: None,
            y_max: None,
            y_percent: false,
        }
    }

    /// Bars: one group per category along x, one bar per series in each group.
    pub fn bars<S: Into<String>>(title: &str, groups: impl IntoIterator<Item = S>) -> Self {
        Self::new(
            title,
            Plot::Bars {
                groups: groups.into_iter().map(Into::into).collect(),
                series: Vec::new(),
            },
        )
    }

    /// Lines through (x, y) points.
    pub fn lines(title: &str) -> Self {
        Self::new(title, Plot::Lines(Vec::new()))
    }

    /// A bar series: one value per group (`None`: no bar there).
    pub fn bar_series(mut self, name: &str, color: &str, values: Vec<Option<f64>>) -> Self {
        match &mut self.plot {
            Plot::Bars { series, .. } => series.push(Series {
                name: name.to_string(),
                color: color.to_string(),
                data: values,
            }),
            Plot::Lines(_) => panic!("bar_series on a line chart"),
        }
        self
    }

    /// A line series.
    pub fn line(mut self, name: &str, color: &str, points: Vec<(f64, f64)>) -> Self {
        match &mut self.plot {
            Plot::Lines(series) => series.push(Series {
                name: name.to_string(),
                color: color.to_string(),
                data: points,
            }),
            Plot::Bars { .. } => panic!("line on a bar chart"),
        }
        self
    }

    /// A dashed reference line across the plot (a target, a baseline), named in the legend.
    pub fn rule(mut self, axis: Axis, at: f64, label: &str, color: &str) -> Self {
        self.rules.push(Rule {
            axis,
            at,
            label: label.to_string(),
            color: color.to_string(),
        });
        self
    }

    pub fn x_label(mut self, label: &str) -> Self {
        label.clone_into(&mut self.x_label);
        self
    }

    pub fn y_label(mut self, label: &str) -> Self {
        label.clone_into(&mut self.y_label);
        self
    }

    /// A line of small print under the plot (how the figures were taken).
    pub fn note(mut self, note: &str) -> Self {
        note.clone_into(&mut self.note);
        self
    }

    pub fn size(mut self, width: f64, height: f64) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// The x axis ends here; points beyond it are drawn at the edge.
    pub fn x_max(mut self, max: f64) -> Self {
        self.x_max = Some(max);
        self
    }

    pub fn y_max(mut self, max: f64) -> Self {
        self.y_max = Some(max);
        self
    }

    /// Y tick labels as percentages of 1.0.
    pub fn y_percent(mut self) -> Self {
        self.y_percent = true;
        self
    }

    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let frame = self.frame();
        let mut s = String::new();
        let (w, h) = (self.width, frame.height);
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
            LEFT + frame.plot_w / 2.0,
            esc(&self.title)
        );
        self.y_axis(&mut s, &frame);
        match &self.plot {
            Plot::Bars { groups, series } => bars(&mut s, &frame, groups, series),
            Plot::Lines(series) => Self::lines_plot(&mut s, &frame, series),
        }
        self.rules_plot(&mut s, &frame);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}" stroke="#212529"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b:.1}" stroke="#212529"/>"##,
            LEFT + frame.plot_w,
            b = frame.bottom
        );
        if !self.x_label.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                LEFT + frame.plot_w / 2.0,
                frame.bottom + frame.x_labels_h + 18.0,
                esc(&self.x_label)
            );
        }
        self.legend(&mut s, &frame);
        if !self.note.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{LEFT}" y="{:.1}" font-size="10" fill="#495057">{}</text>"##,
                h - 10.0,
                esc(&self.note)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Scales and the plot area.
    fn frame(&self) -> Frame {
        let plot_w = self.width - LEFT - LEGEND_W;
        let plot_h = self.height - TOP - 70.0;
        let rule_max = |axis| {
            self.rules
                .iter()
                .filter(|r| r.axis == axis && r.at.is_finite())
                .map(|r| r.at)
                .fold(0.0, f64::max)
        };
        let (data_x, data_y, x_labels_h) = match &self.plot {
            Plot::Bars { groups, series } => {
                let max = series
                    .iter()
                    .flat_map(|s| s.data.iter().flatten())
                    .copied()
                    .filter(|v| v.is_finite())
                    .fold(0.0, f64::max);
                let group_w = plot_w / groups.len().max(1) as f64;
                let lines = groups
                    .iter()
                    .map(|g| wrap(g, group_w).len())
                    .max()
                    .unwrap_or(1);
                (0.0, max, lines as f64 * LINE_H + 6.0)
            }
            Plot::Lines(series) => {
                let points = || series.iter().flat_map(|s| s.data.iter());
                let x = points().map(|p| p.0).filter(|v| v.is_finite());
                let y = points().map(|p| p.1).filter(|v| v.is_finite());
                (x.fold(0.0, f64::max), y.fold(0.0, f64::max), LINE_H + 6.0)
            }
        };
        let positive = |v: f64| if v > 0.0 { v } else { 1.0 };
        let x_max = self
            .x_max
            .unwrap_or_else(|| positive(data_x.max(rule_max(Axis::X))));
        let y_max = self
            .y_max
            .unwrap_or_else(|| positive(data_y.max(rule_max(Axis::Y)) * 1.12));
        let bottom = TOP + plot_h;
        let note_h = if self.note.is_empty() { 0.0 } else { 16.0 };
        let height = (bottom + x_labels_h + 30.0 + note_h).max(self.height);
        Frame {
            plot_w,
            plot_h,
            bottom,
            height,
            x_max,
            y_max,
            x_labels_h,
        }
    }

    fn y_axis(&self, s: &mut String, f: &Frame) {
        let step = nice_step(f.y_max / 5.0);
        for v in ticks(f.y_max, step) {
            let y = f.y(v);
            let label = if self.y_percent {
                format!("{:.0}%", v * 100.0)
            } else {
                number(v, step)
            };
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dee2e6"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                LEFT + f.plot_w,
                LEFT - 6.0,
                y + 4.0
            );
        }
        if !self.y_label.is_empty() {
            let mid = TOP + f.plot_h / 2.0;
            let _ = writeln!(
                s,
                r#"<text x="16" y="{mid:.1}" transform="rotate(-90 16 {mid:.1})" text-anchor="middle">{}</text>"#,
                esc(&self.y_label)
            );
        }
    }

    fn lines_plot(s: &mut String, f: &Frame, series: &[Series<Vec<(f64, f64)>>]) {
        let step = nice_step(f.x_max / 5.0);
        for v in ticks(f.x_max, step) {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                f.x(v),
                f.bottom + 16.0,
                number(v, step)
            );
        }
        for line in series {
            let points: Vec<String> = line
                .data
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", f.x(x), f.y(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></polyline>"#,
                points.join(" "),
                esc(&line.color),
                esc(&line.name)
            );
        }
    }

    fn rules_plot(&self, s: &mut String, f: &Frame) {
        for r in self.rules.iter().filter(|r| r.at.is_finite()) {
            let (x1, y1, x2, y2) = match r.axis {
                Axis::Y => (LEFT, f.y(r.at), LEFT + f.plot_w, f.y(r.at)),
                Axis::X => (f.x(r.at), TOP, f.x(r.at), f.bottom),
            };
            let _ = writeln!(
                s,
                r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{}" stroke-width="2" stroke-dasharray="6 4"><title>{}</title></line>"#,
                esc(&r.color),
                esc(&r.label)
            );
        }
    }

    fn legend(&self, s: &mut String, f: &Frame) {
        let mut entries: Vec<(Swatch, &str, &str)> = match &self.plot {
            Plot::Bars { series, .. } => series
                .iter()
                .map(|se| (Swatch::Box, se.color.as_str(), se.name.as_str()))
                .collect(),
            Plot::Lines(series) => series
                .iter()
                .map(|se| (Swatch::Line, se.color.as_str(), se.name.as_str()))
                .collect(),
        };
        entries.extend(
            self.rules
                .iter()
                .filter(|r| !r.label.is_empty())
                .map(|r| (Swatch::Dashed, r.color.as_str(), r.label.as_str())),
        );
        let lx = LEFT + f.plot_w + 20.0;
        let mut ly = TOP + 4.0;
        for (swatch, color, label) in entries {
            let color = esc(color);
            let (x2, mid) = (lx + 14.0, ly + 7.0);
            let _ = match swatch {
                Swatch::Box => write!(
                    s,
                    r#"<rect x="{lx:.1}" y="{ly:.1}" width="14" height="14" fill="{color}"/>"#
                ),
                Swatch::Line => write!(
                    s,
                    r#"<line x1="{lx:.1}" y1="{mid:.1}" x2="{x2:.1}" y2="{mid:.1}" stroke="{color}" stroke-width="2"/>"#
                ),
                Swatch::Dashed => write!(
                    s,
                    r#"<line x1="{lx:.1}" y1="{mid:.1}" x2="{x2:.1}" y2="{mid:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/>"#
                ),
            };
            let lines = wrap(label, LEGEND_W - 40.0);
            for (i, line) in lines.iter().enumerate() {
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                    lx + 20.0,
                    ly + 11.0 + i as f64 * LINE_H,
                    esc(line)
                );
            }
            s.push('\n');
            ly += 22.0 + (lines.len() - 1) as f64 * LINE_H;
        }
    }
}

/// How a legend entry shows its series.
enum Swatch {
    Box,
    Line,
    Dashed,
}

/// The plot area and its scales.
struct Frame {
    plot_w: f64,
    plot_h: f64,
    /// y of the x axis.
    bottom: f64,
    /// The whole image's height (grows with wrapped group labels).
    height: f64,
    x_max: f64,
    y_max: f64,
    /// Room under the x axis for the tick or group labels.
    x_labels_h: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        LEFT + v.clamp(0.0, self.x_max) / self.x_max * self.plot_w
    }

    fn y(&self, v: f64) -> f64 {
        self.bottom - v.clamp(0.0, self.y_max) / self.y_max * self.plot_h
    }
}

fn bars(s: &mut String, f: &Frame, groups: &[String], series: &[Series<Vec<Option<f64>>>]) {
    let group_w = f.plot_w / groups.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    // Many bars: no room for a number above each.
    let value_labels = bar_w >= 24.0;
    let decimals = if f.y_max < 10.0 { 2 } else { 0 };
    for (gi, group) in groups.iter().enumerate() {
        let present: Vec<(&Series<_>, f64)> = series
            .iter()
            .filter_map(|se| Some((se, se.data.get(gi).copied().flatten()?)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let center = LEFT + (gi as f64 + 0.5) * group_w;
        // The bars that exist sit centred in their group.
        let x0 = center - present.len() as f64 * bar_w / 2.0;
        for (i, (se, v)) in present.iter().enumerate() {
            let x = x0 + i as f64 * bar_w;
            let y = f.y(*v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {v:.decimals$}</title></rect>"#,
                (bar_w - 2.0).max(1.0),
                (f.bottom - y).max(0.0),
                esc(&se.color),
                esc(&se.name),
                esc(group)
            );
            if value_labels {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{v:.decimals$}</text>"#,
                    x + (bar_w - 2.0) / 2.0,
                    y - 3.0
                );
            }
        }
        for (i, line) in wrap(group, group_w).iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{center:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                f.bottom + 16.0 + i as f64 * LINE_H,
                esc(line)
            );
        }
    }
}

/// 0, `step`, 2 × `step` … up to `max`.
fn ticks(max: f64, step: f64) -> impl Iterator<Item = f64> {
    (0..)
        .map(move |i| f64::from(i) * step)
        .take_while(move |v| *v <= max * (1.0 + 1e-9))
}

/// `text` in lines that fit `width` pixels, broken at spaces.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a positive width in pixels over a character's"
)]
fn wrap(text: &str, width: f64) -> Vec<String> {
    let max_chars = ((width / CHAR_W) as usize).max(8);
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= max_chars => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

/// A tick label: as many decimals as the step needs.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "clamped to 0..=6 first"
)]
fn number(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    };
    format!("{v:.decimals$}")
}

/// 1, 2 or 5 times a power of ten, near `raw`: a tick distance people read easily.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Text for SVG markup.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tag closed in order, attributes quoted: enough of XML to catch a broken writer.
    fn assert_well_formed(svg: &str) {
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>\n"));
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(at) = rest.find('<') {
            let text = &rest[..at];
            assert!(!text.contains('>'), "a stray '>' in {text:?}");
            let end = rest[at..].find('>').expect("an unclosed tag") + at;
            let tag = &rest[at + 1..end];
            assert!(!tag.contains('<'), "'<' inside the tag {tag:?}");
            assert_eq!(tag.matches('"').count() % 2, 0, "odd quotes in {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "closing {name}");
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().unwrap().to_string());
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "left open: {open:?}");
    }

    #[test]
    fn bar_chart_has_its_series_axes_and_rules() {
        let svg = Chart::bars("Rates <by> mode", ["N = 1", "N = 10000"])
            .bar_series("ebpf-xdp", "#1971c2", vec![Some(41_000.0), Some(40_500.0)])
            .bar_series("iptables & co", "#e8590c", vec![Some(30_000.0), None])
            .rule(Axis::Y, 45_000.0, "direct client → pod", "#495057")
            .x_label("services")
            .y_label("connections/s")
            .note("median of 3 runs")
            .render();
        assert_well_formed(&svg);
        for want in [
            "Rates &lt;by&gt; mode",
            "ebpf-xdp",
            "iptables &amp; co",
            "direct client → pod",
            ">N = 1<",
            ">N = 10000<",
            ">services<",
            ">connections/s<",
            "median of 3 runs",
            ">41000<",
        ] {
            assert!(svg.contains(want), "no {want:?} in {svg}");
        }
        // Three bars (one value missing), the rule dashed.
        assert_eq!(svg.matches("<rect x=").count(), 3 + 2);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        // The rule is the largest value: the y axis reaches past it.
        assert!(svg.contains(">40000<"));
    }

    #[test]
    fn line_chart_has_its_series_ticks_and_percent_axis() {
        let svg = Chart::lines("CDF")
            .line(
                "changes",
                "#2b6cb0",
                vec![(1.0, 0.0), (1.0, 0.5), (3.0, 1.0)],
            )
            .rule(Axis::X, 10.0, "target p99 10 ms", "red")
            .rule(Axis::Y, 0.99, "", "gray")
            .x_max(12.0)
            .y_max(1.0)
            .y_percent()
            .x_label("ms")
            .y_label("share")
            .render();
        assert_well_formed(&svg);
        for want in [
            ">CDF<",
            ">changes<",
            ">target p99 10 ms<",
            ">100%<",
            ">0%<",
            ">ms<",
            ">share<",
            ">10<",
        ] {
            assert!(svg.contains(want), "no {want:?} in {svg}");
        }
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn long_labels_wrap_and_steps_are_round() {
        assert_eq!(wrap("one two three", 60.0), ["one two", "three"]);
        assert_eq!(wrap("", 60.0), [""]);
        assert!((nice_step(1800.0) - 2000.0).abs() < 1e-9);
        assert!((nice_step(0.3) - 0.2).abs() < 1e-12);
        assert_eq!(number(0.25, 0.05), "0.25");
        assert_eq!(number(4000.0, 2000.0), "4000");
    }
}
