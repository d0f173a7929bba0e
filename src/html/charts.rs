//! Charts as inline SVG, drawn by plotters' SVG backend. Legends are left to the page (HTML
//! below each chart), so that they never hide a curve.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Size of one chart in SVG units; the page scales it to its column.
pub const WIDTH: u32 = 720;
pub const HEIGHT: u32 = 330;

/// Colours that stay apart on screen and on a grey printer (Tableau 10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One curve.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
    /// Draw a dot at each point (sweep steps, short runs).
    pub marks: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            color,
            dashed: false,
            marks: false,
        }
    }

    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    pub fn marked(mut self) -> Series {
        self.marks = true;
        self
    }
}

/// What the x axis holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum XAxis {
    /// Seconds since the start of the run.
    Seconds,
    /// `-log10(1 - p)`, HdrHistogram's percentile axis: 0 is the median's left end (0%),
    /// 1 is 90%, 2 is 99%, ... 5 is 99.999%.
    Percentile,
    /// Requests per second.
    Rate,
}

/// The right end of the percentile axis: 99.999%.
pub const PERCENTILE_NINES: f64 = 5.0;

/// The x position of percentile `q` (0..1) on the percentile axis.
pub fn percentile_x(q: f64) -> f64 {
    if q >= 1.0 {
        return PERCENTILE_NINES;
    }
    (-(1.0 - q).log10()).clamp(0.0, PERCENTILE_NINES)
}

/// The percentile at position `x` of the percentile axis, as a label: 0%, 90%, 99.9%, ...
pub fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    // As many decimals as the nines need, no more.
    let decimals = (x.round() as i32 - 2).clamp(0, 4) as usize;
    let text = format!("{p:.decimals$}");
    format!("{text}%")
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x: XAxis,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub series: Vec<Series>,
    /// A vertical marker at this x with a label (the knee of a sweep).
    pub marker: Option<(f64, String)>,
}

/// A number as an axis label: short, with no trailing noise.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        // Three significant digits at most, trailing zeros dropped: 0.2, 1.25, 50.
        let decimals = if a >= 10.0 {
            1
        } else if a >= 1.0 {
            2
        } else {
            3
        };
        let text = format!("{v:.decimals$}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The SVG text of the chart.
pub fn draw(c: &Chart) -> Result<String, String> {
    let err = |e: DrawingAreaErrorKind<_>| format!("cannot draw {:?}: {e}", c.title);
    let points = || c.series.iter().flat_map(|s| s.points.iter()).copied();
    let finite = |v: &f64| v.is_finite();
    let (mut x0, mut x1) = match c.x {
        XAxis::Percentile => (0.0, PERCENTILE_NINES),
        _ => {
            let xs = points().map(|p| p.0).filter(finite);
            let lo = xs.clone().fold(f64::INFINITY, f64::min);
            let hi = xs.fold(f64::NEG_INFINITY, f64::max);
            match c.x {
                // Time starts at the start of the run.
                XAxis::Seconds => (0.0, hi),
                _ => (lo.min(0.0), hi),
            }
        }
    };
    if let Some((m, _)) = &c.marker {
        x1 = x1.max(*m);
    }
    // No points (or one x): an axis of one unit from where the points are.
    let spans = x0.is_finite() && x1.is_finite() && x1 > x0;
    if !spans {
        (x0, x1) = if x0.is_finite() {
            (x0, x0 + 1.0)
        } else {
            (0.0, 1.0)
        };
    }
    if c.x == XAxis::Rate {
        x1 *= 1.05;
    }
    let y_max = points().map(|p| p.1).filter(finite).fold(0.0f64, f64::max);
    let y1 = if y_max > 0.0 { y_max * 1.08 } else { 1.0 };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 19))
            .margin(12)
            .margin_right(34)
            .x_label_area_size(42)
            .y_label_area_size(62)
            .build_cartesian_2d(x0..x1, 0f64..y1)
            .map_err(err)?;
        let x_fmt = |v: &f64| match c.x {
            XAxis::Percentile => percentile_label(*v),
            _ => tick(*v),
        };
        let y_fmt = |v: &f64| tick(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(c.x_desc)
            .y_desc(c.y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(RGBColor(244, 244, 244));
        if c.x == XAxis::Percentile {
            // One grid line per nine: 0%, 90%, 99%, ...
            mesh.x_labels(PERCENTILE_NINES as usize + 1);
        }
        mesh.draw().map_err(err)?;
        for s in &c.series {
            let style = ShapeStyle {
                color: s.color.to_rgba(),
                filled: false,
                stroke_width: 2,
            };
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 7, 4, style))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(err)?;
            }
            // A lone point draws no line: mark it.
            if s.marks || pts.len() < 3 {
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, style.filled())))
                    .map_err(err)?;
            }
        }
        if let Some((x, label)) = &c.marker {
            let red = RGBColor(200, 0, 0);
            let style = ShapeStyle {
                color: red.to_rgba(),
                filled: false,
                stroke_width: 2,
            };
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(*x, 0.0), (*x, y1)],
                    5,
                    5,
                    style,
                ))
                .map_err(err)?;
            // The label sits left of the line when the line is in the right half.
            let right_half = *x > (x0 + x1) / 2.0;
            let pos = if right_half {
                Pos::new(HPos::Right, VPos::Top)
            } else {
                Pos::new(HPos::Left, VPos::Top)
            };
            let at = chart.backend_coord(&(*x, y1));
            let dx = if right_half { -6 } else { 6 };
            root.draw(&Text::new(
                label.clone(),
                (at.0 + dx, at.1 + 4),
                ("sans-serif", 15).into_font().color(&red).pos(pos),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Height of a breakdown bar chart.
pub const BAR_HEIGHT: u32 = 150;

/// One horizontal bar cut into parts (name, length, colour), left to right: where a
/// mean request's time went.
pub fn draw_breakdown(
    title: &str,
    x_desc: &str,
    parts: &[(String, f64, RGBColor)],
) -> Result<String, String> {
    let err = |e: DrawingAreaErrorKind<_>| format!("cannot draw {title:?}: {e}");
    let total: f64 = parts.iter().map(|p| p.1.max(0.0)).sum();
    let x1 = if total > 0.0 { total * 1.02 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, BAR_HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 19))
            .margin(12)
            .margin_right(34)
            .x_label_area_size(42)
            .y_label_area_size(12)
            .build_cartesian_2d(0f64..x1, 0f64..1f64)
            .map_err(err)?;
        let x_fmt = |v: &f64| tick(*v);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(x_desc)
            .x_label_formatter(&x_fmt)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(RGBColor(244, 244, 244))
            .draw()
            .map_err(err)?;
        let mut start = 0.0;
        for (_, len, color) in parts {
            let end = start + len.max(0.0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(start, 0.2), (end, 0.8)],
                    color.filled(),
                )))
                .map_err(err)?;
            start = end;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert_eq!(percentile_x(0.0), 0.0);
        assert!((percentile_x(0.9) - 1.0).abs() < 1e-9);
        assert!((percentile_x(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(percentile_x(1.0), PERCENTILE_NINES);
        assert_eq!(percentile_x(0.9999999), PERCENTILE_NINES);
        let labels: Vec<String> = (0..=5).map(|x| percentile_label(x as f64)).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn ticks_are_short() {
        let ticks: Vec<String> = [0.0, 0.2, 1.0, 1.25, 50.0, 12.5, 250.0, 25_000.0, 2.5e6]
            .iter()
            .map(|v| tick(*v))
            .collect();
        assert_eq!(
            ticks,
            ["0", "0.2", "1", "1.25", "50", "12.5", "250", "25k", "2.5M"]
        );
    }

    #[test]
    fn draws_every_series_and_escapes_names() {
        let svg = draw(&Chart {
            title: "a <b> & c",
            x: XAxis::Seconds,
            x_desc: "s",
            y_desc: "ms",
            series: vec![
                Series::new("one", color(0), vec![(1.0, 2.0), (2.0, 3.0), (3.0, 1.0)]),
                Series::new("two", color(1), vec![(1.0, 1.0)]).dashed(),
            ],
            marker: Some((2.0, "knee".into())),
        })
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains("knee"));
        // Empty charts still draw (axes only), with no NaN in the SVG.
        let empty = draw(&Chart {
            title: "empty",
            x: XAxis::Rate,
            x_desc: "",
            y_desc: "",
            series: vec![],
            marker: None,
        })
        .unwrap();
        assert!(!empty.contains("NaN"));
        let bar = draw_breakdown(
            "where the time went",
            "ms",
            &[("a".into(), 1.0, color(0)), ("b".into(), 3.0, color(1))],
        )
        .unwrap();
        // One filled bar of each colour, the second three times as long.
        let width = |fill: &str| -> f64 {
            let at = bar
                .find(fill)
                .unwrap_or_else(|| panic!("no {fill} in {bar}"));
            let rect = &bar[bar[..at].rfind("<rect").unwrap()..at];
            let w = rect.split("width=\"").nth(1).unwrap();
            w[..w.find('"').unwrap()].parse().unwrap()
        };
        let (a, b) = (width("#1F77B4"), width("#FF7F0E"));
        assert!((b / a - 3.0).abs() < 0.1, "{a} {b}");
    }
}
