//! The evaluate plot: separation by layer, and the log-prob margin against the multiplier, as
//! SVG or PNG. Text is laid out (and, in PNG, drawn) with a system TrueType font.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::evaluate::{Margin, Separation};

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

/// Writes the plot to `path`, as SVG or PNG by its extension, with one panel per measure (the
/// margin panel only when there are margins).
pub fn plot(path: &Path, sep: &[Separation], margins: &[Margin]) -> Result<()> {
    let panels = if margins.is_empty() { 1 } else { 2 };
    let size = (520 * panels as u32, 400);
    // Drawn in memory and written in one step, so a stopped run leaves no partial picture.
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => {
            register_font()?;
            let mut svg = String::new();
            draw(
                SVGBackend::with_string(&mut svg, size).into_drawing_area(),
                sep,
                margins,
            )?;
            svg.into_bytes()
        }
        Some("png") => {
            register_font()?;
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            draw(
                BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(),
                sep,
                margins,
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
    sep: &[Separation],
    margins: &[Margin],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let panels = if margins.is_empty() { 1 } else { 2 };
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((1, panels));

    let max_layer = sep.iter().map(|s| s.layer).max().unwrap_or(0) as f64;
    let mut chart = ChartBuilder::on(&areas[0])
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

    if panels == 2 {
        let (lo, hi) = margins.iter().fold((f64::MAX, f64::MIN), |(lo, hi), m| {
            (lo.min(m.margin), hi.max(m.margin))
        });
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let (xlo, xhi) = margins.iter().fold((f64::MAX, f64::MIN), |(lo, hi), m| {
            (lo.min(m.multiplier), hi.max(m.multiplier))
        });
        let mut chart = ChartBuilder::on(&areas[1])
            .caption("Log-prob margin", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(xlo..xhi.max(xlo + 1e-9), (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("multiplier")
            .y_desc("margin")
            .draw()
            .map_err(err)?;
        let mut names: Vec<&str> = margins.iter().map(|m| m.steer.as_str()).collect();
        names.dedup();
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = margins
                .iter()
                .filter(|m| m.steer == *name)
                .map(|m| (m.multiplier, m.margin))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
