//! The evaluate plot: separation by layer, and accuracy, mean p(correct) and the log-prob
//! margin against the multiplier with their 95% bands, one line per steering setup, as SVG or
//! PNG. Text is laid out (and, in PNG, drawn) with a system TrueType font.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::evaluate::{Report, ResultRow, Separation};

fn err(e: impl std::fmt::Display) -> Error {
    Error::new(format!("cannot draw the plot: {e}"))
}

/// Fonts the plot's text can use, in order of preference.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a system font as `sans-serif`, once.
fn register_font() -> Result<()> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            let Ok(bytes) = std::fs::read(p) else {
                return false;
            };
            // plotters keeps the font for the whole process
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    });
    if ok {
        Ok(())
    } else {
        Err(Error::new("no TrueType font found for the plot's text")
            .with_hint("install fonts-dejavu-core (or another DejaVu, Liberation or Noto Sans)"))
    }
}

/// A value of a result row and its 95% band, if it has one.
type Measure = (f64, Option<[f64; 2]>);

/// One line of a panel: a setup's values against the multiplier, with an optional band.
struct Line {
    name: String,
    points: Vec<(f64, f64, Option<[f64; 2]>)>,
}

enum Panel {
    Separation(Vec<Separation>),
    Lines {
        title: &'static str,
        y_desc: &'static str,
        lines: Vec<Line>,
    },
}

/// The panels of a report: separation by layer (contrast pairs), accuracy and mean p(correct)
/// against the multiplier with their 95% bands, and (contrast pairs) the log-prob margin.
fn panels(report: &Report) -> Vec<Panel> {
    let mut out = Vec::new();
    if let Some(sep) = &report.separation {
        out.push(Panel::Separation(sep.clone()));
    }
    let lines = |value: &dyn Fn(&ResultRow) -> Measure| -> Vec<Line> {
        report
            .setups
            .iter()
            .map(|s| {
                let mut points: Vec<(f64, f64, Option<[f64; 2]>)> = report
                    .results
                    .iter()
                    .filter(|r| r.setup == s.name)
                    .map(|r| {
                        let (y, band) = value(r);
                        (r.multiplier, y, band)
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Line {
                    name: s.name.clone(),
                    points,
                }
            })
            .collect()
    };
    out.push(Panel::Lines {
        title: "Accuracy",
        y_desc: "accuracy",
        lines: lines(&|r| (r.accuracy, Some(r.accuracy_ci))),
    });
    out.push(Panel::Lines {
        title: "Mean p(correct)",
        y_desc: "p(correct)",
        lines: lines(&|r| (r.mean_p_correct, Some(r.mean_p_correct_ci))),
    });
    if report.margins.is_some() {
        out.push(Panel::Lines {
            title: "Log-prob margin",
            y_desc: "margin",
            lines: lines(&|r| (r.mean_logit_difference, None)),
        });
    }
    out
}

/// Writes the report's plot to `path`, as SVG or PNG by its extension.
pub fn plot(path: &Path, report: &Report) -> Result<()> {
    let panels = panels(report);
    let cols = panels.len().min(2) as u32;
    let rows = panels.len().div_ceil(2) as u32;
    let size = (520 * cols, 400 * rows);
    // Drawn in memory and written in one step, so a stopped run leaves no partial picture.
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => {
            register_font()?;
            let mut svg = String::new();
            draw(
                SVGBackend::with_string(&mut svg, size).into_drawing_area(),
                &panels,
                (rows, cols),
            )?;
            svg.into_bytes()
        }
        Some("png") => {
            register_font()?;
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            draw(
                BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(),
                &panels,
                (rows, cols),
            )?;
            encode_png(&rgb, size)?
        }
        _ => {
            return Err(Error::new(format!(
                "`--plot` `{}` must end in .png or .svg",
                path.display()
            )))
        }
    };
    crate::file_set::write_all_or_nothing(&[crate::file_set::Entry {
        dest: path,
        bytes: &bytes,
    }])
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .and_then(|mut wr| wr.write_image_data(rgb))
        .map_err(err)?;
    Ok(out)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    grid: (u32, u32),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((grid.0 as usize, grid.1 as usize));
    for (panel, area) in panels.iter().zip(&areas) {
        match panel {
            Panel::Separation(sep) => draw_separation(area, sep)?,
            Panel::Lines {
                title,
                y_desc,
                lines,
            } => draw_lines(area, title, y_desc, lines)?,
        }
    }
    root.present().map_err(err)
}

fn draw_separation<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    sep: &[Separation],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let max_layer = sep.iter().map(|s| s.layer).max().unwrap_or(0) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("Projection separation", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(-0.5..max_layer + 0.5, 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("layer")
        .y_desc("accuracy")
        .draw()
        .map_err(err)?;
    let pts: Vec<(f64, f64)> = sep.iter().map(|s| (s.layer as f64, s.accuracy)).collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), &BLUE))
        .map_err(err)?;
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
        .map_err(err)?;
    Ok(())
}

/// Lines against the multiplier, each with its band shaded.
fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    lines: &[Line],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all = lines.iter().flat_map(|l| &l.points);
    let (mut lo, mut hi, mut xlo, mut xhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, band) in all {
        let [a, b] = band.unwrap_or([y, y]);
        (lo, hi) = (lo.min(a.min(y)), hi.max(b.max(y)));
        (xlo, xhi) = (xlo.min(x), xhi.max(x));
    }
    if lo > hi {
        (lo, hi, xlo, xhi) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(xlo..xhi.max(xlo + 1e-9), (lo - pad)..(hi + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("multiplier")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let banded: Vec<(f64, [f64; 2])> = line
            .points
            .iter()
            .filter_map(|&(x, _, b)| b.map(|b| (x, b)))
            .collect();
        if banded.len() > 1 {
            let outline: Vec<(f64, f64)> = banded
                .iter()
                .map(|(x, b)| (*x, b[1]))
                .chain(banded.iter().rev().map(|(x, b)| (*x, b[0])))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    outline,
                    color.mix(0.15).filled(),
                )))
                .map_err(err)?;
        }
        let pts: Vec<(f64, f64)> = line.points.iter().map(|&(x, y, _)| (x, y)).collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(line.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    Ok(())
}
